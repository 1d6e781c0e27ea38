import type { Connector } from './connector';
import { dspSegments } from './dspSegments';
import { peopleList } from './peopleList';
import { segmentFile } from './segmentFile';
import { webhook } from './webhook';

/** Every destination connector, by the name destinations give in `connector`. A new one is one line here. */
export const CONNECTORS: Record<string, Connector> = Object.fromEntries(
  [webhook, dspSegments, peopleList, segmentFile].map((connector) => [connector.name, connector as unknown as Connector]),
);
