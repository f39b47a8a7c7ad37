/**
 * Work of this isolate that outlives the call that started it: the audit chainers (waitUntil'd
 * after a commit) and the queue consumer's batches. Nothing in production waits on it; the test
 * suite does (`backgroundSettled` before each file's teardown): a file's storage and its test
 * runner are torn down when its last test ends, and work still running then (a chainer in its
 * coalescing wait, a delivery publishing its event to a hub) fails into a closed runner.
 */
const running = new Set<Promise<unknown>>();

/** Registers `work` until it settles; returns it unchanged. */
export function track<T>(work: Promise<T>): Promise<T> {
  running.add(work);
  work.then(
    () => running.delete(work),
    () => running.delete(work),
  );
  return work;
}

/** Resolves once nothing tracked is running (work started meanwhile is waited for too). */
export async function backgroundSettled(): Promise<void> {
  while (running.size > 0) await Promise.allSettled([...running]);
}
