// bench/cluster-run's Socket.IO peer: one node of a Socket.IO cluster, the
// layout of the wsbus chat demo's group. Every client joins the room "chat"
// on connection and every "m" event a client emits is emitted to the whole
// room (the sender included, as the chat's group relays to its sender), on
// every node through @socket.io/redis-adapter (its `createAdapter`, Redis
// PUBLISH/SUBSCRIBE, as its README sets it up).
//
//   node server.mjs --port 9001 --redis redis://127.0.0.1:6390
//
// Prints "listening on <port>" once the adapter is connected and the port
// is open.

import { createServer } from "node:http";
import { parseArgs } from "node:util";
import { createAdapter } from "@socket.io/redis-adapter";
import { createClient } from "redis";
import { Server } from "socket.io";

const { values } = parseArgs({
  options: {
    port: { type: "string", default: "9001" },
    host: { type: "string", default: "127.0.0.1" },
    redis: { type: "string" },
  },
});

const httpServer = createServer();
const io = new Server(httpServer, {
  // The generator speaks Engine.IO over WebSocket from the first request,
  // as socket.io-client does with `transports: ["websocket"]`.
  transports: ["websocket"],
  // No permessage-deflate: the wsbus side runs without it too.
  perMessageDeflate: false,
});

if (values.redis) {
  const pubClient = createClient({ url: values.redis });
  const subClient = pubClient.duplicate();
  for (const client of [pubClient, subClient]) {
    client.on("error", (err) => console.error("redis:", err.message));
  }
  await Promise.all([pubClient.connect(), subClient.connect()]);
  io.adapter(createAdapter(pubClient, subClient));
}

io.on("connection", (socket) => {
  socket.join("chat");
  socket.on("m", (payload) => {
    io.to("chat").emit("m", payload);
  });
});

httpServer.listen(Number(values.port), values.host, () => {
  console.log(`listening on ${values.port}`);
});

for (const signal of ["SIGTERM", "SIGINT"]) {
  process.on(signal, () => process.exit(0));
}
