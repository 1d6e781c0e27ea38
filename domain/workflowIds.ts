/**
 * Workflow ids are derived from what they run for, so a repeated start finds the running one.
 * (Kept apart from `ids.ts`: workflows import this, and it must use nothing but plain code.)
 */
export function sourceWorkflowId(sourceId: string): string {
  return `source:${sourceId}`;
}

export const PROFILE_WRITER_LOCK_WORKFLOW_ID = 'profile-writer-lock';
