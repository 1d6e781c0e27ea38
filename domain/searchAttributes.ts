import { defineSearchAttributeKey, SearchAttributeType } from '@temporalio/common';

/** Custom search attributes that make workflows findable in the Temporal UI (registered at server start). */
export const SA = {
  sourceId: defineSearchAttributeKey('DmpSourceId', SearchAttributeType.KEYWORD),
  sourceKind: defineSearchAttributeKey('DmpSourceKind', SearchAttributeType.KEYWORD),
  party: defineSearchAttributeKey('DmpParty', SearchAttributeType.KEYWORD),
  state: defineSearchAttributeKey('DmpState', SearchAttributeType.KEYWORD),
  eventsProcessed: defineSearchAttributeKey('DmpEventsProcessed', SearchAttributeType.INT),
  destinationId: defineSearchAttributeKey('DmpDestinationId', SearchAttributeType.KEYWORD),
} as const;
