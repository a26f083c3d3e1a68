// `node uws-server.mjs --port N [--tls-cert FILE --tls-key FILE]`: `wsbus
// echo`'s behaviour over uWebSockets
// (uWebSockets.js v20.30 as published on npm by @trufflesuite, whose package
// carries the prebuilt binary for Node 20). Every text or binary message is
// echoed back on every path; /broadcast uses uWS's native pub/sub: each socket
// subscribes to one topic on open and each message is published to it with
// `app.publish` (the sender included, unlike `ws.publish`). With
// `--tls-cert/--tls-key` it is `uWS.SSLApp({cert_file_name, key_file_name})`,
// uWS's own TLS (its bundled BoringSSL), the rest unchanged.
import { createRequire } from "node:module";
import { parseArgs } from "node:util";

const { values } = parseArgs({
  options: {
    port: { type: "string", default: "9001" },
    host: { type: "string", default: "127.0.0.1" },
    "tls-cert": { type: "string" },
    "tls-key": { type: "string" },
  },
});
const tls = values["tls-cert"] !== undefined;
if (tls !== (values["tls-key"] !== undefined)) {
  console.error("uws-server: --tls-cert and --tls-key go together");
  process.exit(2);
}

const uWS = createRequire(import.meta.url)("@trufflesuite/uws-js-unofficial");
// The package falls back to a JavaScript implementation over `ws` when its
// native binary does not load: that would not be uWebSockets at all.
if (typeof uWS.us_listen_socket_close !== "function" || !("DEDICATED_COMPRESSOR" in uWS)) {
  console.error("uws-server: the native uWebSockets binary did not load (Node 20 on linux-x64 is needed)");
  process.exit(1);
}

const TOPIC = "broadcast";
const settings = {
  compression: uWS.DISABLED,
  // `wsbus echo`'s message limit (uWS's default is 16 KiB, below the 64 KiB row).
  maxPayloadLength: 64 * 1024 * 1024,
  // uWS *drops* sends and publishes to a socket with more than this queued
  // (default 64 KiB); the others never drop, so neither may it.
  maxBackpressure: 64 * 1024 * 1024,
};

const app = tls
  ? uWS.SSLApp({ cert_file_name: values["tls-cert"], key_file_name: values["tls-key"] })
  : uWS.App();
app.ws("/broadcast", {
  ...settings,
  open: (ws) => ws.subscribe(TOPIC),
  message: (ws, message, isBinary) => {
    app.publish(TOPIC, message, isBinary);
  },
});
app.ws("/*", {
  ...settings,
  message: (ws, message, isBinary) => {
    ws.send(message, isBinary);
  },
});
app.listen(values.host, Number(values.port), (token) => {
  if (!token) {
    console.error(`uws-server: cannot listen on ${values.host}:${values.port}`);
    process.exit(1);
  }
  console.error(`uws-server listening on ${tls ? "wss" : "ws"}://${values.host}:${values.port}`);
});

for (const signal of ["SIGINT", "SIGTERM"]) {
  process.on(signal, () => process.exit(0));
}
