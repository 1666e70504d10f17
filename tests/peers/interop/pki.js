// Prepares node-opcua's certificate store in config.security.pki: its own application
// certificate (made by the client itself, as on its first connection) and the gateway's
// certificate trusted. Prints {"certificate": PEM path, "applicationUri": uri}.
"use strict";
const { applicationUri, emit, makeClient, ownCertificate, run } = require("./common");

run(async (config) => {
  const client = await makeClient(config);
  await client.createDefaultCertificate();
  emit({ certificate: ownCertificate(config.security.pki), applicationUri: applicationUri() });
});
