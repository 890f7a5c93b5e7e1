// Node's process.send between a cluster primary and one worker, measured as
// benchmarks/messages.py measures ours: a send counts once its callback runs.
const cluster = require("cluster");
const count = parseInt(process.argv[2] || "20000", 10);
const BIG = 16 * 1024 * 1024;

if (cluster.isPrimary) {
  const worker = cluster.fork();
  const send = (m) => new Promise((ok) => worker.send(m, ok));
  worker.on("online", async () => {
    const results = {};
    let start = process.hrtime.bigint();
    await Promise.all(Array.from({ length: count }, (_, n) => send({ n })));
    results.pipelined = count / (Number(process.hrtime.bigint() - start) / 1e9);
    const few = Math.max(1, Math.floor(count / 4));
    start = process.hrtime.bigint();
    for (let n = 0; n < few; n++) await send({ n });
    results.oneAtATime = few / (Number(process.hrtime.bigint() - start) / 1e9);
    // Until the worker says it has them all: what our send() Deferreds mean.
    start = process.hrtime.bigint();
    const all = new Promise((ok) => worker.once("message", ok));
    for (let n = 0; n < count; n++) worker.send({ n, of: count });
    await all;
    results.pipelinedReceived = count / (Number(process.hrtime.bigint() - start) / 1e9);
    const big = "x".repeat(BIG);
    start = process.hrtime.bigint();
    await send(big);
    results.big16MiB = Number(process.hrtime.bigint() - start) / 1e9;
    console.log(JSON.stringify(results));
    worker.kill();
    process.exit(0);
  });
} else {
  let seen = 0;
  process.on("message", (m) => {
    if (m && m.of && ++seen === m.of) process.send("all");
  });
}
