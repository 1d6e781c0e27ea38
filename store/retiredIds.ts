import type { Collection } from 'mongodb';
import { insertKeyed, type Store } from './db';

export const RETIRED_IDS = 'retired_ids';

interface RetiredIdDoc {
  _id: string;
  at: Date;
}

/**
 * Ids of deleted resources that a create under an Idempotency-Key would make again (the key's id
 * is derived from it): such a create is refused, so late work of the deleted one (a segment run's
 * states, an export's writes) never lands on a new resource of the same id. One small document per
 * deleted keyed resource, read by `_id`.
 */
export class RetiredIds {
  private readonly ids: Collection<RetiredIdDoc>;

  constructor(store: Store) {
    this.ids = store.db.collection<RetiredIdDoc>(RETIRED_IDS);
  }

  async retire(id: string): Promise<void> {
    await insertKeyed(this.ids, [{ _id: id, at: new Date() }]);
  }

  async isRetired(id: string): Promise<boolean> {
    return (await this.ids.findOne({ _id: id })) !== null;
  }
}
