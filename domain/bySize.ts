/**
 * Cuts `items` into runs whose sizes add up to at most `limit` each, and of at most `count` items
 * (one item at least a run): their [start, end) ranges. No items make one empty range.
 */
export function rangesBySize<T>(items: readonly T[], size: (item: T) => number, limit: number, count = Infinity): Array<[number, number]> {
  const ranges: Array<[number, number]> = [];
  let start = 0;
  let bytes = 0;
  items.forEach((item, index) => {
    const itemBytes = size(item);
    if (index > start && (bytes + itemBytes > limit || index - start >= count)) {
      ranges.push([start, index]);
      start = index;
      bytes = 0;
    }
    bytes += itemBytes;
  });
  if (start < items.length || ranges.length === 0) ranges.push([start, items.length]);
  return ranges;
}

/** What a string takes as an element of a stored array: its UTF-8 bytes, its length and type, and its index as a key. */
export function storedStringBytes(text: string): number {
  return Buffer.byteLength(text) + 16;
}
