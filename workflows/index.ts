export { sourceConnection } from './sourceConnection';
export { profilePartition } from './profilePartition';
export { identityGraph, identityUnlink } from './identityUnlink';
export { storeRetention } from './storeRetention';
export { segmentRun } from './segmentRun';
export { destinationExport } from './destinationExport';
export { crmImport } from './crmImport';
export { feedPull, scheduledFeedPull } from './feedPull';
export { audienceReports } from './audienceReports';
