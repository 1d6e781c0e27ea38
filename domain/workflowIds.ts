/**
 * Workflow ids are derived from what they run for, so a repeated start finds the running one.
 * (Kept apart from `ids.ts`: workflows import this, and it must use nothing but plain code.)
 */
export function sourceWorkflowId(sourceId: string): string {
  return `source:${sourceId}`;
}

/** One profile writer per store: the lock is named after the database whose profiles it guards. */
export function profileWriterLockWorkflowId(databaseName: string): string {
  return `profile-writer-lock:${databaseName}`;
}
