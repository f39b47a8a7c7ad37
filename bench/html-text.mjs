// HTML-to-text worst cases (issue 16, item 9): the one converter of src/mail/html-text.ts on 2 MiB
// of hostile HTML, in Node (the same code the Worker runs). Prints the median and worst of
// BENCH_ROUNDS runs (default 5) per input, in milliseconds of CPU time, for htmlToText (the text part of an
// HTML-only send or forward) and htmlToPlain with a 2 MiB cap (the search index reads 64 KiB).
// Usage: npx node bench/html-text.mjs (Node 22 from the devDependency: it loads the .ts file directly)
// BENCH_HTML_BYTES sets the input size (default 2 MiB). HTML_TEXT_MODULE=<path> measures another copy of the file (e.g. the one before the fix).
import { pathToFileURL } from "node:url";
import { positiveInt } from "./common.mjs";

const modulePath = process.env.HTML_TEXT_MODULE
  ? pathToFileURL(process.env.HTML_TEXT_MODULE).href
  : new URL("../src/mail/html-text.ts", import.meta.url).href;
const { htmlToPlain, htmlToText } = await import(modulePath);

const SIZE = positiveInt("BENCH_HTML_BYTES", 2 * 1024 * 1024);
const ROUNDS = positiveInt("BENCH_ROUNDS", 5);
const fill = (unit) => unit.repeat(Math.ceil(SIZE / unit.length)).slice(0, SIZE);

const inputs = {
  '"<a ".repeat(n)': fill("<a "),
  '"<head></head>".repeat(n)': fill("<head></head>"),
  '"<a href=x>".repeat(n)': fill('<a href="https://x.example/">'),
  '"<style>".repeat(n)': fill("<style>"),
  '"<br      ".repeat(n)': fill("<br      "),
  '"<p>text</p>".repeat(n) (ordinary)': fill("<p>Hello &amp; welcome</p>"),
};

function time(fn, input) {
  const runs = [];
  for (let r = 0; r < ROUNDS; r++) {
    // CPU time of this process, not wall time: the figure stays meaningful on a shared machine.
    const t0 = process.cpuUsage();
    fn(input);
    const d = process.cpuUsage(t0);
    runs.push((d.user + d.system) / 1000);
  }
  runs.sort((a, b) => a - b);
  return { median: runs[Math.floor(runs.length / 2)], worst: runs.at(-1) };
}

console.log(`html-text: ${SIZE} bytes per input, ${ROUNDS} rounds, module ${modulePath}`);
let worst = 0;
for (const [name, input] of Object.entries(inputs)) {
  const text = time(htmlToText, input);
  const plain = time((s) => htmlToPlain(s, SIZE), input);
  worst = Math.max(worst, text.worst, plain.worst);
  console.log(
    `  ${name.padEnd(38)} htmlToText median ${text.median.toFixed(1)} ms, worst ${text.worst.toFixed(1)} ms | htmlToPlain(2 MiB) median ${plain.median.toFixed(1)} ms, worst ${plain.worst.toFixed(1)} ms`,
  );
}
console.log(`html-text worst case at ${SIZE} bytes: ${worst.toFixed(1)} ms`);
