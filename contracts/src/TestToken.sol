// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

/// @title Devnet ERC-20 with an optional burn-on-transfer fee
/// @notice For local chains and tests only: anyone can mint. The owner can set a
///         transfer fee in basis points that is burned from every transfer, to test
///         that the vault credits what it received rather than what was requested.
contract TestToken {
    error NotOwner();
    error FeeTooHigh(uint256 feeBps);
    error InsufficientBalance(address account, uint256 balance, uint256 needed);
    error InsufficientAllowance(address spender, uint256 allowance, uint256 needed);
    error ZeroAddress();

    event Transfer(address indexed from, address indexed to, uint256 value);
    event Approval(address indexed owner, address indexed spender, uint256 value);
    event FeeChanged(uint256 previousFeeBps, uint256 newFeeBps);

    uint256 public constant MAX_FEE_BPS = 10_000;

    string public name;
    string public symbol;
    uint8 public immutable decimals;
    address public immutable owner;
    uint256 public totalSupply;
    uint256 public feeBps;

    mapping(address => uint256) public balanceOf;
    mapping(address => mapping(address => uint256)) public allowance;

    constructor(string memory name_, string memory symbol_, uint8 decimals_) {
        name = name_;
        symbol = symbol_;
        decimals = decimals_;
        owner = msg.sender;
    }

    /// @notice Open to anyone: devnet faucet.
    function mint(address to, uint256 amount) external {
        if (to == address(0)) revert ZeroAddress();
        totalSupply += amount;
        balanceOf[to] += amount;
        emit Transfer(address(0), to, amount);
    }

    function setFeeBps(uint256 newFeeBps) external {
        if (msg.sender != owner) revert NotOwner();
        if (newFeeBps > MAX_FEE_BPS) revert FeeTooHigh(newFeeBps);
        emit FeeChanged(feeBps, newFeeBps);
        feeBps = newFeeBps;
    }

    function approve(address spender, uint256 amount) external returns (bool) {
        if (spender == address(0)) revert ZeroAddress();
        allowance[msg.sender][spender] = amount;
        emit Approval(msg.sender, spender, amount);
        return true;
    }

    function transfer(address to, uint256 amount) external returns (bool) {
        _transfer(msg.sender, to, amount);
        return true;
    }

    /// @dev An allowance of type(uint256).max is never decreased (the common convention).
    function transferFrom(address from, address to, uint256 amount) external returns (bool) {
        uint256 allowed = allowance[from][msg.sender];
        if (allowed != type(uint256).max) {
            if (allowed < amount) revert InsufficientAllowance(msg.sender, allowed, amount);
            unchecked {
                allowance[from][msg.sender] = allowed - amount;
            }
        }
        _transfer(from, to, amount);
        return true;
    }

    /// @dev The sender is debited `amount`; the recipient gets `amount - fee`; the fee
    ///      (rounded down) is burned. Worked example: fee 100 bps, amount 1,000 → 990
    ///      arrives, 10 are burned, totalSupply drops by 10.
    function _transfer(address from, address to, uint256 amount) private {
        if (to == address(0)) revert ZeroAddress();
        uint256 balance = balanceOf[from];
        if (balance < amount) revert InsufficientBalance(from, balance, amount);
        uint256 fee = (amount * feeBps) / MAX_FEE_BPS;
        uint256 net = amount - fee;
        unchecked {
            balanceOf[from] = balance - amount;
        }
        balanceOf[to] += net;
        emit Transfer(from, to, net);
        if (fee != 0) {
            totalSupply -= fee;
            emit Transfer(from, address(0), fee);
        }
    }
}
