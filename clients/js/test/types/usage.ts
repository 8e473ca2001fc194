// Compiled (never run) by types.test.js: the declarations accept the documented usage
// and refuse obvious mistakes (the @ts-expect-error lines must be errors).
import {
  CommandError,
  ConnectionError,
  GameClient,
  type ConnectionEvent,
  type GameState,
  type MoveEvent,
} from "../../xlmate-client.js";

async function main(): Promise<void> {
  const client = new GameClient({
    gameId: "g1",
    token: "t",
    discoveryUrl: "https://xlmate.example.com",
    region: "eu-west",
  });
  client.on("move", (event: MoveEvent, state: GameState) => {
    const san: string = event.san;
    const left: number | null = state.clockLeft("white", Date.now());
    void san;
    void left;
  });
  client.on("connection", (event: ConnectionEvent) => {
    if (event.state === "failed" && event.error) console.log(event.error.code);
  });
  await client.connect();
  const v: number = await client.move("e2e4");
  await client.move({ from: "e7", to: "e8", promotion: "q" });
  await client.draw("offer");
  try {
    await client.takeback("accept");
  } catch (err) {
    if (err instanceof CommandError) console.log(err.code, err.message);
    if (err instanceof ConnectionError) console.log(err.code, err.reason);
  }
  // @ts-expect-error: not an offer action
  await client.draw("maybe");
  // @ts-expect-error: not an event of the client
  client.on("moves", () => {});
  // @ts-expect-error: gameId is required
  new GameClient({ token: "t" });
  console.log(v, client.state.fen, client.state.offers.draw);
  await client.close();
}

void main;
