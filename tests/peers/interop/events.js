// Scenario "events": one subscription with an event monitored item on config.notifier
// (default the Server object, i=2253) selecting config.fields, node-opcua's select-clause
// spelling: browse paths with dots ("Message", "ActiveState.Id"), "ConditionId" for the
// condition's NodeId, "nsu=<uri>;Name" for a field of the server's namespace ("<index>:Name"
// once resolved); config.ofType (a NodeId) adds an OfType where clause. Prints
// {"ready": revisedPublishingInterval}; with config.refresh, then calls ConditionRefresh
// (ConditionType's method, the subscription's id) and prints {"refresh": status}; then per
// event {"event": {field: value}, "types": {field: DataType name}, "picoseconds": {DateTime
// field: picoseconds past its millisecond}}. Ends when its stdin closes.
"use strict";
const { close, connect, emit, opcua, plain, resolver, run, statusOf } = require("./common");

const SERVER = "i=2253";
const CONDITION_TYPE = "i=2782";
const CONDITION_REFRESH = "i=3875";

function whereClause(type) {
  if (!type) return undefined;
  return new opcua.ContentFilterElement({
    filterOperator: opcua.FilterOperator.OfType,
    filterOperands: [
      new opcua.LiteralOperand({ value: { dataType: opcua.DataType.NodeId, value: type } }),
    ],
  });
}

async function conditionRefresh(session, subscriptionId) {
  try {
    const result = await session.call({
      objectId: opcua.resolveNodeId(CONDITION_TYPE),
      methodId: opcua.resolveNodeId(CONDITION_REFRESH),
      inputArguments: [{ dataType: opcua.DataType.UInt32, value: subscriptionId }],
    });
    return result.statusCode.name;
  } catch (err) {
    const status = statusOf(err);
    if (!status) throw err;
    return status;
  }
}

run(async (config) => {
  const link = await connect(config);
  try {
    const resolve = await resolver(link.session);
    const fields = config.fields || ["EventId", "EventType", "SourceName", "Time", "Message", "Severity"];
    const subscription = await link.session.createSubscription2({
      requestedPublishingInterval: config.publishingMs || 100,
      requestedLifetimeCount: 1000,
      requestedMaxKeepAliveCount: 20,
      maxNotificationsPerPublish: 0,
      publishingEnabled: true,
      priority: 1,
    });
    const where = whereClause(config.ofType && resolve(config.ofType));
    const filter = opcua.constructEventFilter(fields.map(resolve.browseName), where);
    const item = await subscription.monitor(
      { nodeId: resolve(config.notifier || SERVER), attributeId: opcua.AttributeIds.EventNotifier },
      { queueSize: 1000, discardOldest: false, filter },
      opcua.TimestampsToReturn.Both
    );
    item.on("changed", (values) => {
      const event = {};
      const types = {};
      const picoseconds = {}; // of each DateTime field: what its Date (milliseconds) lacks
      fields.forEach((name, i) => {
        const value = values[i].value;
        event[name] = plain(value);
        types[name] = opcua.DataType[values[i].dataType];
        if (value instanceof Date) picoseconds[name] = value.picoseconds || 0;
      });
      emit({ event, types, picoseconds });
    });
    if (item.statusCode && item.statusCode.isNot(opcua.StatusCodes.Good)) {
      throw new Error(`event item: ${item.statusCode.name}`);
    }
    emit({ ready: subscription.publishingInterval });
    if (config.refresh) emit({ refresh: await conditionRefresh(link.session, subscription.subscriptionId) });
    await new Promise((done) => {
      process.stdin.on("end", done); // the test is done
      process.stdin.resume();
    });
    await subscription.terminate();
  } finally {
    await close(link);
  }
});
