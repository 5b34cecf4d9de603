/**
 * Looks up each of `items` with at most `concurrency` lookups at once, as the revocation hints pushed by
 * another instance are confirmed in the store. After the first failure the rest are not looked up (the
 * store is taken as unreachable); `settle` runs for every item either way. Resolves with that first
 * failure, or undefined.
 *
 * @example
 * const unreachable = await lookUpEach(ids, 4, (id) => confirm(id), (id) => pending.delete(id))
 */
export async function lookUpEach<T>(
  items: readonly T[],
  concurrency: number,
  lookUp: (item: T) => Promise<void>,
  settle: (item: T) => void,
): Promise<Error | undefined> {
  const queue = [...items]
  let unreachable: Error | undefined
  const worker = async () => {
    for (let next = queue.shift(); next !== undefined; next = queue.shift()) {
      try {
        if (unreachable === undefined) await lookUp(next)
      } catch (err) {
        unreachable = err as Error
      } finally {
        settle(next)
      }
    }
  }
  await Promise.all(Array.from({ length: Math.min(concurrency, queue.length) }, worker))
  return unreachable
}
