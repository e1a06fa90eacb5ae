// compare.mjs - bitnetd `generate --json --logits` output vs llama_greedy.mjs output.
//   node compare.mjs OURS.json LLAMA.json MIN_TOKENS TOL_SIGMA
// Passes when the first MIN_TOKENS generated ids are equal and, at every compared step,
// max over the vocabulary of |log p_bitnetd - log p_llama.cpp| <= TOL_SIGMA * (standard
// deviation of bitnetd's logits at that step). Prints one JSON line with the numbers.
import { readFileSync } from "node:fs";

const [, , oursPath, theirsPath, minStr, tolStr] = process.argv;
const ours = JSON.parse(readFileSync(oursPath, "utf8"));
const theirs = JSON.parse(readFileSync(theirsPath, "utf8"));
const minTokens = Number(minStr), tolSigma = Number(tolStr);

let same = 0;
while (same < ours.ids.length && same < theirs.ids.length && ours.ids[same] === theirs.ids[same]) same++;
let worst = 0, worstStep = -1;
const steps = Math.min(same + 1, ours.logits.length, theirs.logprobs.length);
for (let s = 0; s < steps; s++) {
  const lg = ours.logits[s];
  const m = Math.max(...lg);
  const lse = m + Math.log(lg.reduce((a, v) => a + Math.exp(v - m), 0));
  const mean = lg.reduce((a, v) => a + v, 0) / lg.length;
  const sd = Math.sqrt(lg.reduce((a, v) => a + (v - mean) ** 2, 0) / lg.length);
  let d = 0;
  for (let i = 0; i < lg.length; i++) {
    const t = theirs.logprobs[s][i];
    if (t === null || t === undefined) continue;
    d = Math.max(d, Math.abs(lg[i] - lse - t));
  }
  if (d / sd > worst) { worst = d / sd; worstStep = s; }
}
const ok = same >= minTokens && worst <= tolSigma;
console.log(JSON.stringify({ ok, equal_prefix: same, compared_steps: steps, worst_diff_in_sigma: worst,
                             worst_step: worstStep, tolerance_sigma: tolSigma }));
process.exit(ok ? 0 : 1);
