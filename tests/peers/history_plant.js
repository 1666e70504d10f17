// A node-opcua plant for the backfill tests: four Double variables (ns urn:t, s=pumpa.V/T/P/S)
// counted up by 1 every <period_ms>, stamped with the time of the change; V, T and P keep an
// in-memory history (installHistoricalDataNode), S does not. Prints "ready" once it listens.
// Usage: node tests/peers/history_plant.js <port> <period_ms>
"use strict";
const path = require("path");
const modules = path.join(__dirname, "..", "..", "bench", "nodeopcua", "node_modules");
const { OPCUAServer } = require(path.join(modules, "node-opcua-server"));
const { DataType, Variant } = require(path.join(modules, "node-opcua-variant"));
const { StatusCodes } = require(path.join(modules, "node-opcua-status-code"));

const [port, periodMs] = process.argv.slice(2).map(Number);

async function main() {
  const server = new OPCUAServer({ port, hostname: "127.0.0.1" });
  await server.initialize();
  const addressSpace = server.engine.addressSpace;
  const ns = addressSpace.registerNamespace("urn:t");
  const folder = ns.addFolder(addressSpace.rootFolder.objects, { browseName: "pumpa" });
  const vars = [];
  for (const short of ["V", "T", "P", "S"]) {
    const v = ns.addVariable({
      componentOf: folder,
      nodeId: `s=pumpa.${short}`,
      browseName: `pumpa.${short}`,
      dataType: DataType.Double,
      value: new Variant({ dataType: DataType.Double, value: 0 }),
    });
    if (short !== "S") {
      addressSpace.installHistoricalDataNode(v, { maxOnlineValues: 100000 });
    }
    vars.push(v);
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
  // The test closes our stdin when it is done, however it ends.
  process.stdin.on("end", stop);
  process.stdin.resume();
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
