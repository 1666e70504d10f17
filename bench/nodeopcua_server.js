// A node-opcua plant for bench.opcua_sessions: N Double variables (ns urn:bench:ingest, s=v<i>)
// all changed every <period_ms>. Prints "ready" once it listens. Installed by
// bench/setup_nodeopcua.sh into bench/nodeopcua/ (gitignored).
// Usage: node bench/nodeopcua_server.js <port> <items> <period_ms>
"use strict";
const path = require("path");
const modules = path.join(__dirname, "nodeopcua", "node_modules");
const { OPCUAServer } = require(path.join(modules, "node-opcua-server"));
const { DataType, Variant } = require(path.join(modules, "node-opcua-variant"));
const { StatusCodes } = require(path.join(modules, "node-opcua-status-code"));

const [port, items, periodMs] = process.argv.slice(2).map(Number);

async function main() {
  const server = new OPCUAServer({
    port,
    hostname: "127.0.0.1",
    // As many sessions and items as the bench opens; the defaults are lower on some versions.
    serverCapabilities: {
      maxSessions: 64,
      operationLimits: { maxMonitoredItemsPerCall: 1000, maxNodesPerRead: 1000 },
    },
  });
  await server.initialize();
  const ns = server.engine.addressSpace.registerNamespace("urn:bench:ingest");
  const folder = ns.addFolder(server.engine.addressSpace.rootFolder.objects, { browseName: "Bench" });
  const vars = [];
  for (let i = 0; i < items; i++) {
    vars.push(
      ns.addVariable({
        componentOf: folder,
        nodeId: `s=v${i}`,
        browseName: `v${i}`,
        dataType: DataType.Double,
        value: new Variant({ dataType: DataType.Double, value: 0 }),
      })
    );
  }
  await server.start();
  console.log("ready");
  let value = 0;
  setInterval(() => {
    value += 1;
    const now = new Date();
    for (const v of vars) {
      v.setValueFromSource({ dataType: DataType.Double, value }, StatusCodes.Good, now);
    }
  }, periodMs);
  const stop = async () => {
    await server.shutdown(0);
    process.exit(0);
  };
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
