// A node-opcua plant for the write-back tests (ns urn:test:write): writable variables of
// several DataTypes (s=w.bool, w.int16, w.int32, w.float32, w.float64) and a read-only Double
// (s=ro, AccessLevel CurrentRead only). Prints "ready" once it listens; stops when its stdin
// closes.
// Usage: node tests/peers/write_plant.js <port>
"use strict";
const path = require("path");
const modules = path.join(__dirname, "..", "..", "bench", "nodeopcua", "node_modules");
const { OPCUAServer } = require(path.join(modules, "node-opcua-server"));
const { DataType, Variant } = require(path.join(modules, "node-opcua-variant"));

const [port] = process.argv.slice(2).map(Number);

const WRITABLE = [
  ["w.bool", DataType.Boolean, false],
  ["w.int16", DataType.Int16, 0],
  ["w.int32", DataType.Int32, 0],
  ["w.float32", DataType.Float, 0],
  ["w.float64", DataType.Double, 0],
];

async function main() {
  const server = new OPCUAServer({ port, hostname: "127.0.0.1" });
  await server.initialize();
  const addressSpace = server.engine.addressSpace;
  const ns = addressSpace.registerNamespace("urn:test:write");
  const folder = ns.addFolder(addressSpace.rootFolder.objects, { browseName: "Plant" });
  for (const [name, dataType, value] of WRITABLE) {
    ns.addVariable({
      componentOf: folder,
      nodeId: `s=${name}`,
      browseName: name,
      dataType,
      accessLevel: "CurrentRead | CurrentWrite",
      userAccessLevel: "CurrentRead | CurrentWrite",
      value: new Variant({ dataType, value }),
    });
  }
  ns.addVariable({
    componentOf: folder,
    nodeId: "s=ro",
    browseName: "ro",
    dataType: DataType.Double,
    accessLevel: "CurrentRead",
    userAccessLevel: "CurrentRead",
    value: new Variant({ dataType: DataType.Double, value: 5 }),
  });
  await server.start();
  console.log("ready");
  const stop = async () => {
    await server.shutdown(0);
    process.exit(0);
  };
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
  process.stdin.on("end", stop);
  process.stdin.resume();
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
