import { createAudienceReportActivities, type AudienceReportDeps } from './audienceReports';
import { createCollectionActivities, type CollectionDeps } from './collection';
import { createExportActivities, type ExportDeps } from './exports';
import { createFeedActivities, type FeedDeps } from './feeds';
import { createUnlinkActivities, type UnlinkDeps } from './identityUnlink';
import { createItemModelActivities, type ItemModelDeps } from './itemModel';
import { createLookalikeActivities, type LookalikeDeps } from './lookalike';
import { createPrivacyActivities, type PrivacyDeps } from './privacy';
import { createProfileWriterActivities, type ProfileWriterDeps } from './profileWriter';
import { createRetentionActivities, type RetentionDeps } from './retention';
import { createSegmentationActivities, type SegmentationDeps } from './segmentation';
import { createUploadActivities, type UploadDeps } from './uploads';

export type ActivityDeps = CollectionDeps & ProfileWriterDeps & RetentionDeps & UnlinkDeps & SegmentationDeps & ExportDeps & UploadDeps & FeedDeps & AudienceReportDeps & ItemModelDeps & LookalikeDeps & PrivacyDeps;

/** Every activity the worker registers, built over the dependencies it is given. */
export function createActivities(deps: ActivityDeps) {
  return { ...createCollectionActivities(deps), ...createProfileWriterActivities(deps), ...createUnlinkActivities(deps), ...createRetentionActivities(deps), ...createSegmentationActivities(deps), ...createExportActivities(deps), ...createUploadActivities(deps), ...createFeedActivities(deps), ...createAudienceReportActivities(deps), ...createItemModelActivities(deps), ...createLookalikeActivities(deps), ...createPrivacyActivities(deps) };
}
