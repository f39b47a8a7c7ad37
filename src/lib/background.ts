/**
 * Work of this isolate that outlives the call that started it: the audit chainers (waitUntil'd
 * after a commit) and the queue consumer's batches, tracked only when the test suite asks
 * (`trackBackground()` in test/setup.ts, which awaits `backgroundSettled` before each file's
 * teardown): a file's storage and its test runner are torn down when its last test ends, and
 * work still running then (a chainer in its coalescing wait, a delivery publishing its event to a
 * hub) fails into a closed runner. Production never turns it on: the runtime may cut background
 * work off, and a promise cut off never settles, so a set of them would only grow.
 */
let running: Set<Promise<unknown>> | null = null;

/** Turns tracking on for this isolate (the test suite's setup). */
export function trackBackground(): void {
  running ??= new Set();
}

/** Registers `work` until it settles, when tracking is on; returns it unchanged. */
export function track<T>(work: Promise<T>): Promise<T> {
  const set = running;
  if (!set) return work;
  set.add(work);
  const done = () => set.delete(work);
  work.then(done, done);
  return work;
}

/** Resolves once nothing tracked is running (work started meanwhile is waited for too). */
export async function backgroundSettled(): Promise<void> {
  while (running && running.size > 0) await Promise.allSettled([...running]);
}
