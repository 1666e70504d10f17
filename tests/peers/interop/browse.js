// Scenario "browse": walks the server's own namespaces down from config.root (default the
// Objects folder), breadth first, following forward hierarchical references (Organizes,
// HasComponent, HasProperty, HasOrderedComponent, HasEventSource, HasNotifier) into nodes outside
// namespace 0, at most config.maxNodes nodes. Prints one line per node:
// {"node": id, "attributes": {name: value | {"status": name}}, "references": [[type, forward,
// target, browseName, nodeClass, typeDefinition], ...]} (every reference, both directions, browse
// continuation points followed), then {"done": count}.
"use strict";
const { close, connect, emit, opcua, plain, resolver, run } = require("./common");

const DESCEND = new Set([35, 36, 46, 47, 48, 49].map((i) => `ns=0;i=${i}`));
const ATTRIBUTES = [
  "NodeClass", "BrowseName", "DisplayName", "Description", "WriteMask", "UserWriteMask",
  "EventNotifier", "Value", "DataType", "ValueRank", "ArrayDimensions", "AccessLevel",
  "UserAccessLevel", "MinimumSamplingInterval", "Historizing", "Executable", "UserExecutable",
];
const PER_CALL = 100; // nodes per Browse request, attribute reads per Read request: 1,000

function text(nodeId) {
  return nodeId.toString();
}

async function browseAll(session, nodeIds) {
  const results = await session.browse(
    nodeIds.map((nodeId) => ({
      nodeId,
      referenceTypeId: null,
      includeSubtypes: true,
      browseDirection: opcua.BrowseDirection.Both,
      nodeClassMask: 0,
      resultMask: 63,
    }))
  );
  const out = [];
  for (const result of results) {
    if (result.statusCode.isNot(opcua.StatusCodes.Good)) throw new Error(`browse: ${result.statusCode.name}`);
    const refs = [...(result.references || [])];
    let point = result.continuationPoint;
    while (point && point.length) {
      const [next] = await session.browseNext([point], false);
      refs.push(...(next.references || []));
      point = next.continuationPoint;
    }
    out.push(refs);
  }
  return out;
}

async function attributesOf(session, nodeIds) {
  const reads = [];
  for (const nodeId of nodeIds) {
    for (const name of ATTRIBUTES) reads.push({ nodeId, attributeId: opcua.AttributeIds[name] });
  }
  const values = [];
  for (let i = 0; i < reads.length; i += PER_CALL * 10) {
    values.push(...(await session.read(reads.slice(i, i + PER_CALL * 10))));
  }
  return nodeIds.map((_, n) => {
    const attributes = {};
    ATTRIBUTES.forEach((name, a) => {
      const dv = values[n * ATTRIBUTES.length + a];
      attributes[name] = dv.statusCode.isGood() ? plain(dv.value.value) : { status: dv.statusCode.name };
    });
    return attributes;
  });
}

run(async (config) => {
  const link = await connect(config);
  try {
    const resolve = await resolver(link.session);
    const limit = config.maxNodes || 2000;
    const seen = new Set();
    let level = [resolve(config.root || "i=85")];
    level.forEach((n) => seen.add(text(n)));
    let count = 0;
    while (level.length) {
      const next = [];
      for (let i = 0; i < level.length; i += PER_CALL) {
        const batch = level.slice(i, i + PER_CALL);
        const refs = await browseAll(link.session, batch);
        const attributes = await attributesOf(link.session, batch);
        batch.forEach((nodeId, k) => {
          const references = refs[k].map((r) => [
            text(r.referenceTypeId), r.isForward, text(r.nodeId), plain(r.browseName),
            r.nodeClass, text(r.typeDefinition),
          ]);
          emit({ node: text(nodeId), attributes: attributes[k], references });
          count += 1;
          for (const r of refs[k]) {
            const target = r.nodeId;
            const key = text(target);
            if (!r.isForward || !DESCEND.has(text(r.referenceTypeId))) continue;
            if (target.namespace === 0 || target.serverIndex || seen.has(key)) continue;
            if (seen.size >= limit) throw new Error(`more than ${limit} nodes`);
            seen.add(key);
            next.push(opcua.resolveNodeId(key));
          }
        });
      }
      level = next;
    }
    emit({ done: count });
  } finally {
    await close(link);
  }
});
