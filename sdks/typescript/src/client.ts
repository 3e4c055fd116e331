import { createClient, type Client, type Transport } from "@connectrpc/connect";
import { FlowService } from "./gen/twofold/v1/flow_pb.js";
import { SessionService } from "./gen/twofold/v1/session_pb.js";

/** The public listener's services. */
export interface TwofoldClient {
  flows: Client<typeof FlowService>;
  sessions: Client<typeof SessionService>;
}

export function createTwofoldClient(transport: Transport): TwofoldClient {
  return {
    flows: createClient(FlowService, transport),
    sessions: createClient(SessionService, transport),
  };
}
