// Scenario "call": Call config.method on config.object ("nsu=" ids allowed) with config.inputs
// ([{"dataType": "String", "value": ...}]; common.js `argument`: ByteString in base64,
// LocalizedText as its text, as a condition's Acknowledge(EventId, Comment) takes them).
// Prints {"status": name, "outputs": [...], "inputArgumentResults": [...]} when the server
// answered the call, or {"status": name, "serviceFault": true} when it refused the Call service
// as a whole.
"use strict";
const { argument, close, connect, emit, plain, resolver, run, statusOf } = require("./common");

run(async (config) => {
  const link = await connect(config);
  try {
    const resolve = await resolver(link.session);
    const request = {
      objectId: resolve(config.object),
      methodId: resolve(config.method),
      inputArguments: (config.inputs || []).map(argument),
    };
    let result;
    try {
      result = await link.session.call(request);
    } catch (err) {
      const status = statusOf(err);
      if (!status) throw err;
      emit({ status, serviceFault: true });
      return;
    }
    emit({
      status: result.statusCode.name,
      outputs: (result.outputArguments || []).map((v) => plain(v.value)),
      inputArgumentResults: (result.inputArgumentResults || []).map((s) => s.name),
    });
  } finally {
    await close(link);
  }
});
