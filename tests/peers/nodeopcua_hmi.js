// An HMI on another stack: a node-opcua client subscribed to the given nodes of the gateway's
// server, printing each notification as a JSON line. node-opcua comes from
// bench/setup_nodeopcua.sh (bench/nodeopcua/, gitignored).
// Usage: node tests/peers/nodeopcua_hmi.js <endpoint> <publishing_ms> <nodeId>...
// Prints {"ready": revisedPublishingInterval} once every item is monitored, then
// {"node": nodeId, "value": v, "status": name, "source": ISO time} per notification.
"use strict";
const path = require("path");
const modules = path.join(__dirname, "..", "..", "bench", "nodeopcua", "node_modules");
const {
  OPCUAClient,
  AttributeIds,
  TimestampsToReturn,
  ClientMonitoredItemGroup,
  MessageSecurityMode,
  SecurityPolicy,
} = require(path.join(modules, "node-opcua-client"));

const [endpoint, publishingMs, ...nodeIds] = process.argv.slice(2);

async function main() {
  const client = OPCUAClient.create({
    endpointMustExist: false,
    securityMode: MessageSecurityMode.None,
    securityPolicy: SecurityPolicy.None,
    connectionStrategy: { maxRetry: 2, initialDelay: 200, maxDelay: 1000 },
  });
  await client.connect(endpoint);
  const session = await client.createSession();
  const subscription = await session.createSubscription2({
    requestedPublishingInterval: Number(publishingMs),
    requestedLifetimeCount: 1000,
    requestedMaxKeepAliveCount: 20,
    maxNotificationsPerPublish: 0,
    publishingEnabled: true,
    priority: 1,
  });
  const items = nodeIds.map((nodeId) => ({ nodeId, attributeId: AttributeIds.Value }));
  const group = ClientMonitoredItemGroup.create(
    subscription,
    items,
    { samplingInterval: 0, discardOldest: true, queueSize: 100 },
    TimestampsToReturn.Both
  );
  group.on("changed", (item, dataValue) => {
    const value = dataValue.value ? dataValue.value.value : null;
    const source = dataValue.sourceTimestamp ? dataValue.sourceTimestamp.toISOString() : null;
    const line = { node: item.itemToMonitor.nodeId.toString(), value, status: dataValue.statusCode.name, source };
    process.stdout.write(JSON.stringify(line) + "\n");
  });
  await new Promise((resolve) => group.once("initialized", resolve));
  process.stdout.write(JSON.stringify({ ready: subscription.publishingInterval }) + "\n");
  const stop = async () => {
    try {
      await subscription.terminate();
      await session.close();
      await client.disconnect();
    } finally {
      process.exit(0);
    }
  };
  process.on("SIGTERM", stop);
  process.stdin.on("end", stop); // the test closed our stdin: it is done
  process.stdin.resume();
}

main().catch((err) => {
  process.stderr.write(String(err && err.stack ? err.stack : err) + "\n");
  process.exit(1);
});
