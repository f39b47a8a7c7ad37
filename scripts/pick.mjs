// Shows a JSON answer and prints one field of it, so a walk-through can capture ids without jq:
//   KEY=$(curl -s … | node scripts/pick.mjs data.api_key)
// The whole answer goes to stderr (you still see it); the field, as plain text, to stdout.
// Paths are dot-separated; array items by index (`data.0.id`). A missing field exits 1.
let text = "";
process.stdin.setEncoding("utf8");
for await (const chunk of process.stdin) text += chunk;
let json;
try {
  json = JSON.parse(text);
} catch {
  console.error(text || "(empty answer: is `npm run dev` running?)");
  process.exit(1);
}
console.error(JSON.stringify(json, null, 2));
const path = process.argv[2] ?? "";
const value = path.split(".").reduce((v, k) => (k === "" || v == null ? v : v[k]), json);
if (value === undefined || value === null) {
  console.error(`pick: no ${path} in this answer`);
  process.exit(1);
}
console.log(typeof value === "string" ? value : JSON.stringify(value));
