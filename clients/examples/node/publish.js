#!/usr/bin/env node
// Publishes one message to a fanout node over gRPC and prints the topic
// sequence number and the number of subscribers it reached.
//
//   node publish.js --addr 127.0.0.1:50051 --topic news --payload 'hello'
'use strict';

const path = require('node:path');
const { parseArgs } = require('node:util');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

const PROTO_ROOT = path.join(__dirname, '..', '..', '..', 'proto');

const { values: args } = parseArgs({
  options: {
    addr: { type: 'string', default: '127.0.0.1:50051' },
    topic: { type: 'string', default: 'news' },
    payload: { type: 'string', default: '' },
  },
});

const definition = protoLoader.loadSync('fanout/v1/fanout.proto', {
  includeDirs: [PROTO_ROOT],
  longs: String, // uint64 seq and subscribers, without losing precision
  defaults: true, // proto3 omits zeros: seq=0 subscribers=0, not undefined
});
const { Fanout } = grpc.loadPackageDefinition(definition).fanout.v1;

const client = new Fanout(args.addr, grpc.credentials.createInsecure());
const request = { topic: args.topic, payload: Buffer.from(args.payload, 'utf8') };
client.Publish(request, { deadline: Date.now() + 10_000 }, (err, resp) => {
  client.close();
  if (err) {
    console.error(`publish: ${err.message}`);
    process.exitCode = 1;
    return;
  }
  console.log(`seq=${resp.seq} subscribers=${resp.subscribers}`);
});
