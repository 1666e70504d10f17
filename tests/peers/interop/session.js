// Scenario "secure session": one login with the given security and user. Prints
// {"session": "activated", "policy": uri, "mode": name, "reads": [{node, value, status}]} after
// reading config.read (node ids, "nsu=" allowed), or, when the login is refused,
// {"refused": status, "by": "server", "stage": "connect"|"session", "message": text} (or
// {"refused": null, "by": "client", ...} when node-opcua itself will not send the identity
// token, e.g. anonymous on an endpoint that offers none). Each is exit code 0: the test judges
// whether a refusal was the right answer.
"use strict";
const { close, connect, emit, opcua, plain, resolver, run, statusOf } = require("./common");

run(async (config) => {
  let link;
  try {
    link = await connect(config);
  } catch (err) {
    const status = statusOf(err);
    const message = String(err.message).split("\n")[0];
    if (status) {
      emit({ refused: status, by: "server", stage: err.stage, message });
      return;
    }
    // node-opcua does not send a token the endpoint does not offer: it refuses by itself.
    if (err.stage === "session" && /user token policy/i.test(message)) {
      emit({ refused: null, by: "client", stage: err.stage, message });
      return;
    }
    throw err; // neither side's answer: a failure of the scenario
  }
  try {
    const resolve = await resolver(link.session);
    const nodes = config.read || [];
    const values = await link.session.read(
      nodes.map((text) => ({ nodeId: resolve(text), attributeId: opcua.AttributeIds.Value }))
    );
    // The endpoint the session was made on, as the server described it.
    const endpoint = link.session.endpoint;
    emit({
      session: "activated",
      policy: endpoint.securityPolicyUri,
      mode: opcua.MessageSecurityMode[endpoint.securityMode],
      reads: values.map((dv, i) => ({
        node: nodes[i],
        value: plain(dv.value.value),
        status: dv.statusCode.name,
      })),
    });
  } finally {
    await close(link);
  }
});
