// Scenario "subscribe": one subscription (config.publishingMs) with a monitored item on the
// Value of each of config.nodes ("nsu=" ids allowed), timestamps Both. Prints
// {"ready": revisedPublishingInterval} once every item is created, then per notification
// {"node": id as given, "value", "dataType": variant type name, "status": name, "code": number,
// "source": ISO ms, "sourcePicoseconds", "server": ISO ms}. Ends (subscription deleted, session
// closed) when its stdin closes.
"use strict";
const { close, connect, emit, opcua, plain, resolver, run } = require("./common");

run(async (config) => {
  const link = await connect(config);
  try {
    const resolve = await resolver(link.session);
    const nodes = config.nodes || [];
    const subscription = await link.session.createSubscription2({
      requestedPublishingInterval: config.publishingMs || 100,
      requestedLifetimeCount: 1000,
      requestedMaxKeepAliveCount: 20,
      maxNotificationsPerPublish: 0,
      publishingEnabled: true,
      priority: 1,
    });
    const items = nodes.map((text) => ({ nodeId: resolve(text), attributeId: opcua.AttributeIds.Value }));
    const group = opcua.ClientMonitoredItemGroup.create(
      subscription,
      items,
      { samplingInterval: 0, discardOldest: true, queueSize: 100 },
      opcua.TimestampsToReturn.Both
    );
    const names = new Map(items.map((item, i) => [item.nodeId.toString(), nodes[i]]));
    group.on("changed", (item, dv) => {
      emit({
        node: names.get(item.itemToMonitor.nodeId.toString()),
        value: plain(dv.value.value),
        dataType: opcua.DataType[dv.value.dataType],
        status: dv.statusCode.name,
        code: dv.statusCode.value,
        source: plain(dv.sourceTimestamp),
        sourcePicoseconds: dv.sourcePicoseconds,
        server: plain(dv.serverTimestamp),
      });
    });
    await new Promise((resolve_) => group.once("initialized", resolve_));
    for (const [i, item] of group.monitoredItems.entries()) {
      const status = item.statusCode;
      if (status && status.isNot(opcua.StatusCodes.Good)) throw new Error(`item ${nodes[i]}: ${status.name}`);
    }
    emit({ ready: subscription.publishingInterval });
    await new Promise((resolve_) => {
      process.stdin.on("end", resolve_); // the test is done
      process.stdin.resume();
    });
    await subscription.terminate();
  } finally {
    await close(link);
  }
});
