/**
 * The one Docker network every txpipe container joins; containers reach each
 * other by container name (and network alias) on it.
 *
 * @module
 */
import { Construct } from "constructs";
import { network } from "@cdktf/provider-docker";

/** Props of `TxpipeNetwork`. */
export interface TxpipeNetworkProps {
  /** Docker network name. */
  readonly name: string;
}

/** A user-defined bridge network, so Docker's DNS resolves container names and aliases. */
export class TxpipeNetwork extends Construct {
  /** The network resource; containers attach to it by `name`. */
  readonly network: network.Network;
  /** The network's name. */
  readonly name: string;

  constructor(scope: Construct, id: string, props: TxpipeNetworkProps) {
    super(scope, id);
    this.network = new network.Network(this, "network", {
      name: props.name,
      driver: "bridge",
      attachable: true,
    });
    this.name = this.network.name;
  }
}
