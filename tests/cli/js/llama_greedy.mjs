// llama_greedy.mjs - greedy continuation and raw logits from stock llama.cpp (the
// prebuilt binaries shipped by node-llama-cpp), for comparison with bitnetd.
//   node llama_greedy.mjs MODEL.gguf '[prompt ids]' N
// Prints {"ids": [...N generated ids], "logprobs": [[log p per vocab id] per step]}.
// (node-llama-cpp 3.21 exposes next-token probabilities, not raw logits: log p equals
// the logits minus their log-sum-exp, so they compare shift-free.)
// Token ids go in directly (no tokenization on this side); EOS does not stop it.
import { getLlama, LlamaLogLevel } from "node-llama-cpp";

const [, , modelPath, idsJson, nStr] = process.argv;
const prompt = JSON.parse(idsJson);
const n = Number(nStr);
const llama = await getLlama({ gpu: false, build: "never", logLevel: LlamaLogLevel.error });
const model = await llama.loadModel({ modelPath, gpuLayers: 0 });
// F32 KV cache and no flash attention: bitnetd keeps K/V in F32, so only the activation
// quantization and llama.cpp's F16 matmuls for the embedding/output remain different.
const context = await model.createContext({
  contextSize: 512, batchSize: 512, threads: 1, flashAttention: false,
  experimentalKvCacheKeyType: "F32", experimentalKvCacheValueType: "F32",
});
const seq = context.getSequence();
const want = { generateNext: { probabilities: true } };
let input = prompt.slice(0, -1).concat([[prompt[prompt.length - 1], want]]);
const ids = [], logits = [];
for (let step = 0; step < n; step++) {
  const res = await seq.controlledEvaluate(input);
  const map = res[res.length - 1].next.probabilities;
  let best = -1, bestv = -Infinity;
  const dense = new Array(map.size).fill(null);
  for (const [tok, p] of map) {
    dense[tok] = Math.log(p);
    if (p > bestv || (p === bestv && tok < best)) { best = tok; bestv = p; }
  }
  logits.push(dense);
  ids.push(best);
  input = [[best, want]];
}
console.log(JSON.stringify({ ids, logprobs: logits }));
await context.dispose();
await model.dispose();
await llama.dispose();
