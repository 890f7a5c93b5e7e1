// Node's cluster on the same hello world, for comparison.  WORKERS=0 runs
// one plain process; otherwise a primary forks WORKERS workers (round robin).
const cluster = require("cluster");
const http = require("http");
const workers = parseInt(process.env.WORKERS || "2", 10);
const port = parseInt(process.env.PORT || "8000", 10);

if (workers > 0 && cluster.isPrimary) {
  for (let i = 0; i < workers; i++) cluster.fork();
} else {
  const id = cluster.isWorker ? cluster.worker.id : "-";
  http
    .createServer((req, res) => {
      res.end(`hello from worker ${id} (pid ${process.pid})\n`);
    })
    .listen(port, "127.0.0.1");
}
