// The peer benchmark's MES stand-in: a Node.js HTTP server that answers at once, so neither
// side's figure is the receiver's (bench/peer.py measures its ceiling alone and its CPU).
//
//   node bench/sink.js <port>
//
// POST, any path:
//   - a JSON object (one message)                      -> 204, counts 1
//   - a JSON array (a Node-RED join batch)             -> 204, counts its length
//   - a JSON array of {idempotency_key, event} (bridge's batch contract, connectors/mes/batch.py)
//                                                      -> 200 {"results": [{key, 201}, ...]}
// GET /stats -> {"count": messages, "requests": POSTs, "connections": TCP connections accepted}
// The body is parsed only when it starts with "[" (a batch): a single message costs no parse.
"use strict";
const http = require("http");

let count = 0;
let requests = 0;
let connections = 0;  // TCP connections accepted: shows whether the client keeps them alive

const server = http.createServer((req, res) => {
  if (req.method === "GET") {
    res.writeHead(200, { "content-type": "application/json" });
    res.end(JSON.stringify({ count, requests, connections }));
    return;
  }
  const chunks = [];
  req.on("data", (c) => chunks.push(c));
  req.on("end", () => {
    requests += 1;
    const first = chunks.length ? chunks[0][0] : 0;
    if (first !== 0x5b) {  // not "[": one message
      count += 1;
      res.writeHead(204);
      res.end();
      return;
    }
    let items;
    try {
      items = JSON.parse(Buffer.concat(chunks).toString());
    } catch (e) {
      res.writeHead(400);
      res.end();
      return;
    }
    count += items.length;
    if (items.length && items[0] && typeof items[0].idempotency_key === "string") {
      const results = items.map((i) => ({ idempotency_key: i.idempotency_key, status: 201 }));
      const body = JSON.stringify({ results });
      res.writeHead(200, { "content-type": "application/json" });
      res.end(body);
      return;
    }
    res.writeHead(204);
    res.end();
  });
});
// Node's default keep-alive timeout (5 s) would close idle keep-alive sockets between bursts.
server.keepAliveTimeout = 60000;
server.on("connection", () => { connections += 1; });
server.listen(Number(process.argv[2]), "127.0.0.1");
// Nothing to flush: exit at once (a close would wait for the clients' keep-alive sockets).
for (const sig of ["SIGTERM", "SIGINT"]) process.on(sig, () => process.exit(0));
