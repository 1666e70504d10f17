// Shared by the interoperability scenarios (tests/integration/test_nodeopcua_interop.py): each
// scenario is a small script that takes one JSON argument, drives the gateway's OPC UA server
// with node-opcua (an OPC UA stack independent of asyncua) and prints what it saw as JSON lines
// on stdout. The test judges; a script only reports, so its lines are facts both stacks can be
// compared on.
//
// Exit codes: 0 the scenario ran (a refusal the scenario asked about is a fact, printed, not a
// failure); 1 it failed (the last line is {"error": ..., "status": ...}); 2 its hard timeout.
//
// The argument: {"endpoint": "opc.tcp://...",
//                "security": {"policy": "Basic256Sha256", "mode": "SignAndEncrypt",
//                             "pki": "<folder of node-opcua's own certificate manager>",
//                             "serverCertificate": "<gateway's certificate (DER) to trust>"},
//                "user": {"username": "...", "password": "..."} | null (anonymous),
//                "timeoutS": 60, ...scenario fields}
// node-opcua comes from bench/setup_nodeopcua.sh (bench/nodeopcua/, gitignored).
"use strict";
const fs = require("fs");
const os = require("os");
const path = require("path");

const MODULES = path.join(__dirname, "..", "..", "..", "bench", "nodeopcua", "node_modules");
const CLIENT = path.join(MODULES, "node-opcua-client");
const opcua = require(CLIENT);
// Not a dependency of ours by name: the certificate manager node-opcua-client itself uses.
const MANAGER = require.resolve("node-opcua-certificate-manager", { paths: [CLIENT] });
const { OPCUACertificateManager } = require(MANAGER);

const APPLICATION_NAME = "BridgeInteropNodeOPCUA";

function emit(line) {
  process.stdout.write(JSON.stringify(line) + "\n");
}

/** The OPC UA status name an error carries: node-opcua puts it in the message ("... BadXxx
 * (0x80..)"), in a service response, or in a StatusCode attached to the error. */
function statusOf(err) {
  if (!err) return null;
  const response = err.response;
  if (response && response.responseHeader && response.responseHeader.serviceResult) {
    return response.responseHeader.serviceResult.name;
  }
  if (err.statusCode && err.statusCode.name) return err.statusCode.name;
  const found = String(err.message || err).match(/\b(Bad[A-Za-z]+|Uncertain[A-Za-z]+)\b/);
  return found ? found[1] : null;
}

/** node-opcua's own certificate store in `pki`: it makes its application certificate there (as an
 * OPCUAClient does on first use) and trusts the gateway's certificate, nothing else. */
async function certificateManager(security) {
  const cm = new OPCUACertificateManager({
    rootFolder: security.pki,
    automaticallyAcceptUnknownCertificate: false,
    disableFileWatchers: true,
  });
  await cm.initialize();
  if (security.serverCertificate) {
    await cm.trustCertificate(fs.readFileSync(security.serverCertificate));
  }
  return cm;
}

function applicationUri() {
  return opcua.makeApplicationUrn(os.hostname(), APPLICATION_NAME);
}

/** Path of the application certificate node-opcua makes for itself in a pki folder. */
function ownCertificate(pki) {
  return path.join(pki, "own", "certs", "client_certificate.pem");
}

function identity(user) {
  if (!user) return { type: opcua.UserTokenType.Anonymous };
  return { type: opcua.UserTokenType.UserName, userName: user.username, password: user.password };
}

/** An OPCUAClient for config.security (not connected). With a pki folder, node-opcua keeps its
 * own application certificate there, made on first use by the client itself. */
async function makeClient(config) {
  const security = config.security || {};
  const options = {
    applicationName: APPLICATION_NAME,
    applicationUri: applicationUri(),
    endpointMustExist: false,
    securityMode: opcua.MessageSecurityMode[security.mode || "None"],
    securityPolicy: opcua.SecurityPolicy[security.policy || "None"],
    // One attempt: a refusal must reach the test as a refusal, not as a retry loop.
    connectionStrategy: { maxRetry: 0, initialDelay: 100, maxDelay: 500 },
    keepSessionAlive: false,
    requestedSessionTimeout: 60000,
  };
  if (security.pki) {
    options.clientCertificateManager = await certificateManager(security);
    options.certificateFile = ownCertificate(security.pki);
    options.privateKeyFile = path.join(security.pki, "own", "private", "private_key.pem");
  }
  return opcua.OPCUAClient.create(options);
}

/** A connected client and an activated session. Throws with the stage that failed
 * ("connect" or "session") in err.stage. */
async function connect(config) {
  const client = await makeClient(config);
  try {
    await client.connect(config.endpoint);
  } catch (err) {
    err.stage = "connect";
    await client.disconnect().catch(() => {});
    throw err;
  }
  try {
    const session = await client.createSession(identity(config.user));
    return { client, session };
  } catch (err) {
    err.stage = "session";
    await client.disconnect().catch(() => {});
    throw err;
  }
}

async function close(link) {
  if (!link) return;
  try {
    if (link.session) await link.session.close();
  } finally {
    await link.client.disconnect();
  }
}

/** "nsu=<uri>;s=..." (what the tests pass: namespace indexes are the server's business) to a
 * NodeId of this session, from the server's NamespaceArray. Its `browseName` does the same for a
 * browse name, "nsu=<uri>;Name" to "<index>:Name" (an event field of the server's own
 * namespace); other text is returned as it is. */
async function resolver(session) {
  const array = await session.read({ nodeId: "i=2255", attributeId: opcua.AttributeIds.Value });
  const namespaces = array.value.value;
  const split = (text) => {
    const found = /^nsu=([^;]+);(.*)$/.exec(text);
    if (!found) return null;
    const index = namespaces.indexOf(found[1]);
    if (index < 0) throw new Error(`namespace ${found[1]} is not on the server`);
    return [index, found[2]];
  };
  const resolve = (text) => {
    const found = split(text);
    return opcua.resolveNodeId(found ? `ns=${found[0]};${found[1]}` : text);
  };
  resolve.browseName = (text) => {
    const found = split(text);
    return found ? `${found[0]}:${found[1]}` : text;
  };
  return resolve;
}

/** A decoded value as plain JSON the test can compare with asyncua's: Dates as ISO strings,
 * NodeIds and QualifiedNames as text, structures as their fields. */
function plain(value) {
  if (value === null || value === undefined) return null;
  if (value instanceof Date) return value.toISOString();
  if (Buffer.isBuffer(value)) return value.toString("base64");
  if (Array.isArray(value) || ArrayBuffer.isView(value)) return Array.from(value, plain);
  if (value instanceof opcua.NodeId || value instanceof opcua.ExpandedNodeId) return value.toString();
  if (value instanceof opcua.QualifiedName) return `${value.namespaceIndex}:${value.name}`;
  if (value instanceof opcua.LocalizedText) return { locale: value.locale || null, text: value.text };
  if (value instanceof opcua.StatusCode) return value.name;
  if (value instanceof opcua.Variant) return plain(value.value);
  if (typeof value === "bigint") return Number(value);
  if (typeof value === "object") {
    const schema = value.schema;
    const names = schema && schema.fields ? schema.fields.map((f) => f.name) : Object.keys(value);
    const out = {};
    for (const name of names) out[name] = plain(value[name]);
    return out;
  }
  return value;
}

/** A method input from JSON, {"dataType": name, "value": v}: ByteString values in base64 (an
 * event's EventId as `plain` prints it), LocalizedText values as their text. */
function argument(spec) {
  const dataType = opcua.DataType[spec.dataType];
  if (dataType === undefined) throw new Error(`unknown DataType ${spec.dataType}`);
  let value = spec.value;
  if (spec.dataType === "ByteString") value = Buffer.from(value, "base64");
  if (spec.dataType === "LocalizedText") value = new opcua.LocalizedText({ text: value });
  return { dataType, value };
}

/** Run a scenario: main(config) with a hard deadline (config.timeoutS, default 60 s); any
 * error becomes a JSON line and exit code 1. The process always exits: node-opcua keeps timers
 * and sockets that would hold it. */
function run(main) {
  const config = JSON.parse(process.argv[2] || "{}");
  const seconds = config.timeoutS || 60;
  setTimeout(() => {
    emit({ error: `timed out after ${seconds} s`, status: null });
    process.stderr.write(`${path.basename(process.argv[1])}: timed out after ${seconds} s\n`);
    process.exit(2);
  }, seconds * 1000);
  main(config).then(
    () => process.exit(0),
    (err) => {
      const message = String(err && err.message ? err.message : err);
      emit({ error: message, status: statusOf(err), stage: err && err.stage });
      const trace = err && err.stack ? err.stack : err;
      process.stderr.write(`${path.basename(process.argv[1])}: ${trace}\n`);
      process.exit(1);
    }
  );
}

module.exports = {
  APPLICATION_NAME,
  applicationUri,
  argument,
  certificateManager,
  close,
  connect,
  emit,
  identity,
  makeClient,
  opcua,
  ownCertificate,
  plain,
  resolver,
  run,
  statusOf,
};
