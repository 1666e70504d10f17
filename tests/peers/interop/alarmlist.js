// Scenario "alarmlist": node-opcua's own alarm list, what an HMI built on node-opcua uses
// (installAlarmMonitoring: a subscription at 500 ms with an event item on the Server object
// selecting every field of AlarmConditionType, where clause OfType AcknowledgeableConditionType,
// then ConditionRefresh). Prints {"ready": true} once the refresh call has returned, then, at the
// subscription's first keep-alive after it, {"alarms": [{conditionId, eventType, eventId,
// retain}]}: every event the refresh queued left the server before that keep-alive (a keep-alive
// is sent only when nothing is queued), so the list is then all the refresh gave. Ends when its
// stdin closes.
"use strict";
const { close, connect, emit, opcua, plain, run } = require("./common");

function shown(alarm) {
  return {
    conditionId: plain(alarm.conditionId),
    eventType: plain(alarm.eventType),
    eventId: plain(alarm.eventId),
    retain: alarm.getRetain(),
  };
}

run(async (config) => {
  const link = await connect(config);
  try {
    const list = await opcua.installAlarmMonitoring(link.session);
    // Not public: the subscription installAlarmMonitoring made (node-opcua-client 2.182).
    const subscription = link.session.$subscriptionForAlarmList;
    if (!subscription) throw new Error("installAlarmMonitoring made no subscription");
    subscription.once("keepalive", () => emit({ alarms: list.alarms().map(shown) }));
    emit({ ready: true });
    await new Promise((done) => {
      process.stdin.on("end", done); // the test is done
      process.stdin.resume();
    });
    await opcua.uninstallAlarmMonitoring(link.session);
  } finally {
    await close(link);
  }
});
