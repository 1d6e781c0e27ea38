import { TCString } from '@iabtcf/core';
import type { ConsentInput } from './schemas';

/** Consent as stored on an event and a profile: what the signal said, decoded once at the edge. */
export interface StoredConsent {
  tcf?: {
    tcString: string;
    policyVersion: number;
    cmpId: number;
    created: Date;
    purposeConsents: number[];
    purposeLegitimateInterests: number[];
    vendorConsents: number[];
  };
  gpp?: { gppString: string };
  purposes?: Record<string, boolean>;
}

export class ConsentError extends Error {}

function idsOf(vector: { forEach(cb: (value: boolean, id: number) => void): void }): number[] {
  const ids: number[] = [];
  vector.forEach((value, id) => {
    if (value) ids.push(id);
  });
  return ids;
}

/** Decodes a TCF v2 string with the IAB's library; a string it cannot read is refused, not guessed at. */
export function decodeTcf(tcString: string): NonNullable<StoredConsent['tcf']> {
  let model;
  try {
    model = TCString.decode(tcString);
  } catch (error) {
    throw new ConsentError(`not a readable TCF string: ${(error as Error).message}`);
  }
  if (model.version !== 2) throw new ConsentError(`TCF version ${model.version} is not supported`);
  return {
    tcString,
    policyVersion: Number(model.policyVersion),
    cmpId: Number(model.cmpId),
    created: model.created,
    purposeConsents: idsOf(model.purposeConsents),
    purposeLegitimateInterests: idsOf(model.purposeLegitimateInterests),
    vendorConsents: idsOf(model.vendorConsents),
  };
}

export function decodeConsent(input: ConsentInput): StoredConsent {
  const consent: StoredConsent = {};
  if (input.tcf !== undefined) consent.tcf = decodeTcf(input.tcf);
  if (input.gpp !== undefined) consent.gpp = { gppString: input.gpp };
  if (input.purposes !== undefined) consent.purposes = input.purposes;
  return consent;
}
