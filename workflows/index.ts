export { sourceConnection } from './sourceConnection';
export { profilePartition } from './profilePartition';
