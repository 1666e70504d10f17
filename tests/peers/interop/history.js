// Scenario "history": HistoryRead of config.nodes ("nsu=" ids allowed), following continuation
// points until none is left (at most config.maxPages requests). Raw by default
// (ReadRawModifiedDetails: config.start / config.end as ISO text or null, numValuesPerNode,
// returnBounds, all sent as given: node-opcua's readHistoryValue would default returnBounds
// to true); processed with config.aggregate ("Average", "Minimum", "Maximum", "Count") and
// config.intervalMs. config.releaseAfter: send releaseContinuationPoints with the points held
// after that many requests (the answer is printed as a page too); with config.reuseReleased,
// then send those released points once more (printed as a page: the server's verdict on them).
// Prints per node per request {"node", "page", "status", "code", "more": bool, "count",
// "values": [{value, status, code, source, sourcePicoseconds}]} ("values" left out with
// config.summary: only "first" and "last"), then {"done": requests}.
"use strict";
const { close, connect, emit, opcua, plain, resolver, run } = require("./common");

function details(config) {
  const time = (text) => (text ? new Date(text) : null);
  if (config.aggregate) {
    return new opcua.ReadProcessedDetails({
      startTime: time(config.start),
      endTime: time(config.end),
      processingInterval: config.intervalMs,
      aggregateType: [opcua.resolveNodeId(opcua.AggregateFunction[config.aggregate])],
    });
  }
  return new opcua.ReadRawModifiedDetails({
    isReadModified: false,
    startTime: time(config.start),
    endTime: time(config.end),
    numValuesPerNode: config.numValuesPerNode || 0,
    returnBounds: !!config.returnBounds,
  });
}

function sample(dv) {
  return {
    value: plain(dv.value.value),
    status: dv.statusCode.name, // node-opcua names info bits too: "Good#InfoTypeDataValue|..."
    code: dv.statusCode.value,
    source: plain(dv.sourceTimestamp),
    sourcePicoseconds: dv.sourcePicoseconds,
  };
}

run(async (config) => {
  const link = await connect(config);
  try {
    const resolve = await resolver(link.session);
    const maxPages = config.maxPages || 1000;
    // The nodes still to read, each with its continuation point (null before the first request).
    let open = (config.nodes || []).map((text) => ({ text, nodeId: resolve(text), point: null }));
    let page = 0;
    let released = [];
    const read = async (nodes, release) => {
      page += 1;
      const request = new opcua.HistoryReadRequest({
        historyReadDetails: details(config),
        timestampsToReturn: opcua.TimestampsToReturn.Both,
        releaseContinuationPoints: release,
        nodesToRead: nodes.map((n) => ({ nodeId: n.nodeId, continuationPoint: n.point })),
      });
      return new Promise((ok, fail) =>
        link.session.historyRead(request, (err, res) => (err ? fail(err) : ok(res)))
      );
    };
    const report = (nodes, response) => {
      const next = [];
      response.results.forEach((result, i) => {
        const values = (result.historyData && result.historyData.dataValues) || [];
        const point = result.continuationPoint;
        const more = !!(point && point.length);
        const status = result.statusCode;
        const line = { node: nodes[i].text, page, status: status.name, code: status.value, more, count: values.length };
        if (config.summary) {
          line.first = values.length ? sample(values[0]) : null;
          line.last = values.length ? sample(values[values.length - 1]) : null;
        } else {
          line.values = values.map(sample);
        }
        emit(line);
        if (more) next.push({ ...nodes[i], point });
      });
      return next;
    };
    while (open.length) {
      if (page >= maxPages) throw new Error(`still continuation points after ${maxPages} requests`);
      const release = config.releaseAfter !== undefined && page >= config.releaseAfter;
      const next = report(open, await read(open, release));
      if (release) {
        released = open;
        break;
      }
      open = next;
    }
    if (config.reuseReleased && released.length) report(released, await read(released, false));
    emit({ done: page });
  } finally {
    await close(link);
  }
});
