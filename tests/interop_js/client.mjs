// Drives a keycard-agents server with the official @a2a-js/sdk 1.3.0 client.
// Usage: node client.mjs <agent base URL> <bearer token> <JSONRPC|HTTP+JSON>
// Prints one JSON object describing what the client saw; exits 1 on any failure.
import { randomUUID } from "node:crypto";
import { Role } from "@a2a-js/sdk";
import {
  ClientFactory,
  DefaultAgentCardResolver,
  JsonRpcTransportFactory,
  RestTransportFactory,
} from "@a2a-js/sdk/client";

const [baseUrl, token, binding] = process.argv.slice(2);

const authFetch = (input, init = {}) => {
  const headers = new Headers(init.headers || {});
  headers.set("Authorization", `Bearer ${token}`);
  return fetch(input, { ...init, headers });
};

function textMessage(text) {
  return {
    messageId: randomUUID(),
    role: Role.ROLE_USER,
    parts: [{ content: { $case: "text", value: text } }],
  };
}

function texts(parts) {
  return (parts || [])
    .map((p) => (p.content && p.content.$case === "text" ? p.content.value : null))
    .filter((t) => t !== null);
}

async function main() {
  const factory = new ClientFactory({
    transports: [
      new JsonRpcTransportFactory({ fetchImpl: authFetch }),
      new RestTransportFactory({ fetchImpl: authFetch }),
    ],
    preferredTransports: [binding],
    cardResolver: new DefaultAgentCardResolver({ fetchImpl: authFetch }),
  });
  const client = await factory.createFromUrl(baseUrl);

  const sent = await client.sendMessage({ message: textMessage("hello from js") });
  const task = sent.task ?? sent;
  const sendResult = {
    state: task.status?.state,
    artifacts: (task.artifacts || []).flatMap((a) => texts(a.parts)),
  };

  const kinds = [];
  let lastState = null;
  const streamTexts = [];
  for await (const event of client.sendMessageStream({ message: textMessage("stream from js") })) {
    const payload = event.payload ?? event;
    const kind = payload.$case ?? Object.keys(event).find((k) => event[k] !== undefined);
    kinds.push(kind);
    const value = payload.value ?? event[kind];
    if (kind === "task") lastState = value.status?.state;
    if (kind === "statusUpdate") lastState = value.status?.state;
    if (kind === "artifactUpdate") streamTexts.push(...texts(value.artifact?.parts));
  }
  const out = {
    protocolVersion: client.protocolVersion,
    transport: client.transport.protocolName,
    send: sendResult,
    stream: { kinds, lastState, texts: streamTexts },
  };
  process.stdout.write(JSON.stringify(out) + "\n");
}

main().catch((err) => {
  process.stderr.write(`interop failure: ${err && err.stack ? err.stack : err}\n`);
  process.exit(1);
});
