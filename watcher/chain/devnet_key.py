"""Print the devnet hot-wallet key (anvil's public test account 1, the vault operator
that `watcher devnet` deploys with). Used only by `make run`; never for real networks."""

from watcher.chain.devnet import dev_account

if __name__ == "__main__":
    print("0x" + bytes(dev_account(1).key).hex())
