export { sourceConnection } from './sourceConnection';
export { profileWriterLock } from './profileWriterLock';
