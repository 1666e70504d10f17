// Scenario "endpoints": GetEndpoints over a None channel (discovery, which the server answers
// before any trust or login), no session. Prints {"endpoints": [EndpointDescription as plain
// fields]}.
"use strict";
const { emit, makeClient, plain, run } = require("./common");

run(async (config) => {
  const client = await makeClient({ security: {} });
  await client.connect(config.endpoint);
  try {
    const endpoints = await client.getEndpoints();
    emit({ endpoints: endpoints.map(plain) });
  } finally {
    await client.disconnect();
  }
});
