import type { Client } from '@temporalio/client';
import type { RequestHandler } from 'express';
import type { ChannelRejections } from '../store/channelRejections';
import type { Store } from '../store/db';
import type { ApiConfig } from './app';
import type { WriteKeys } from './auth';
import type { Collector } from './collector';

/** What a router of the API is built from: the store, Temporal, config, the two kinds of auth, and the way into the source log. */
export interface RouterDeps {
  store: Store;
  temporal: Client;
  config: ApiConfig;
  admin: RequestHandler;
  writeKeys: WriteKeys;
  collector: Collector;
  /** Counts of bad input from channels whose senders never see an error. */
  rejections: ChannelRejections;
}
