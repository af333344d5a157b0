// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

/// @dev The three ERC-20 calls the vault makes. Return values are not declared here on
///      purpose: some deployed tokens (USDT on Ethereum) return nothing, so the vault
///      calls them with a low-level call and accepts "no data" or "true".
interface IERC20Minimal {
    function balanceOf(address account) external view returns (uint256);
}

/// @title Exchange vault
/// @notice Users deposit ERC-20 tokens or the native coin; the exchange's off-chain
///         watcher credits them from the `Deposit` events. Withdrawals are paid by the
///         operator (the hot wallet), each under a unique id that can be used once, so a
///         re-sent transaction can never pay twice.
/// @dev Roles: the owner administers; the operator withdraws; the guardian (or the
///      owner) can pause in an emergency, and only the owner can unpause. Pausing
///      stops deposits and withdrawals alike.
contract Vault {
    // ------------------------------------------------------------------ errors

    error NotOwner();
    error NotPendingOwner();
    error NotOperator();
    error NotGuardian();
    error ZeroAddress();
    error ZeroAmount();
    error EnforcedPause();
    error ExpectedPause();
    error AlreadyWithdrawn(uint256 id);
    error ReentrantCall();
    error TokenTransferFailed(address token);
    error NativeTransferFailed(address to);
    error DirectNativeTransfer();
    error NativeViaDepositNative();

    // ------------------------------------------------------------------ events

    event Deposit(address indexed account, address indexed token, uint256 amount);
    event Withdrawn(uint256 indexed id, address indexed to, address indexed token, uint256 amount);
    event OwnershipTransferStarted(address indexed previousOwner, address indexed newOwner);
    event OwnershipTransferred(address indexed previousOwner, address indexed newOwner);
    event OperatorChanged(address indexed previousOperator, address indexed newOperator);
    event GuardianChanged(address indexed previousGuardian, address indexed newGuardian);
    event Paused(address indexed by);
    event Unpaused(address indexed by);

    // ------------------------------------------------------------------ state

    address public owner;
    address public pendingOwner;
    address public operator;
    address public guardian;
    bool public paused;

    /// @notice Withdrawal ids already paid. An id is the watcher's on-chain withdrawal id.
    mapping(uint256 => bool) public withdrawn;

    // 1 = not entered, 2 = entered. Non-zero both ways so the guard's SSTOREs stay cheap.
    uint256 private _entered = 1;

    // ------------------------------------------------------------------ modifiers

    modifier onlyOwner() {
        if (msg.sender != owner) revert NotOwner();
        _;
    }

    modifier onlyOperator() {
        if (msg.sender != operator) revert NotOperator();
        _;
    }

    modifier whenNotPaused() {
        if (paused) revert EnforcedPause();
        _;
    }

    modifier nonReentrant() {
        if (_entered == 2) revert ReentrantCall();
        _entered = 2;
        _;
        _entered = 1;
    }

    constructor(address operator_, address guardian_) {
        if (operator_ == address(0) || guardian_ == address(0)) revert ZeroAddress();
        owner = msg.sender;
        operator = operator_;
        guardian = guardian_;
        emit OwnershipTransferred(address(0), msg.sender);
        emit OperatorChanged(address(0), operator_);
        emit GuardianChanged(address(0), guardian_);
    }

    // ------------------------------------------------------------------ deposits

    /// @notice Pull `amount` of `token` from the caller (needs an allowance) and credit
    ///         what actually arrived. For fee-on-transfer tokens the event carries the
    ///         received amount, not the requested one.
    function deposit(address token, uint256 amount) external whenNotPaused nonReentrant {
        if (token == address(0)) revert NativeViaDepositNative();
        if (amount == 0) revert ZeroAmount();
        uint256 before = IERC20Minimal(token).balanceOf(address(this));
        _callToken(token, abi.encodeWithSelector(0x23b872dd, msg.sender, address(this), amount));
        uint256 received = IERC20Minimal(token).balanceOf(address(this)) - before;
        if (received == 0) revert ZeroAmount();
        emit Deposit(msg.sender, token, received);
    }

    /// @notice Deposit the native coin; the event's token is address(0).
    function depositNative() external payable whenNotPaused nonReentrant {
        if (msg.value == 0) revert ZeroAmount();
        emit Deposit(msg.sender, address(0), msg.value);
    }

    /// @dev A bare send is refused: it would carry no deposit event and never be credited.
    receive() external payable {
        revert DirectNativeTransfer();
    }

    // ------------------------------------------------------------------ withdrawals

    /// @notice Pay `amount` of `token` (address(0) = native) to `to` under withdrawal `id`.
    ///         Each id pays at most once.
    function withdraw(uint256 id, address token, address to, uint256 amount)
        external
        onlyOperator
        whenNotPaused
        nonReentrant
    {
        if (withdrawn[id]) revert AlreadyWithdrawn(id);
        if (to == address(0)) revert ZeroAddress();
        if (amount == 0) revert ZeroAmount();
        withdrawn[id] = true;
        if (token == address(0)) {
            (bool ok,) = to.call{value: amount}("");
            if (!ok) revert NativeTransferFailed(to);
        } else {
            _callToken(token, abi.encodeWithSelector(0xa9059cbb, to, amount));
        }
        emit Withdrawn(id, to, token, amount);
    }

    /// @notice Same as the public `withdrawn` mapping, under a more readable name.
    function isWithdrawn(uint256 id) external view returns (bool) {
        return withdrawn[id];
    }

    // ------------------------------------------------------------------ pause

    function pause() external whenNotPaused {
        if (msg.sender != guardian && msg.sender != owner) revert NotGuardian();
        paused = true;
        emit Paused(msg.sender);
    }

    function unpause() external onlyOwner {
        if (!paused) revert ExpectedPause();
        paused = false;
        emit Unpaused(msg.sender);
    }

    // ------------------------------------------------------------------ roles

    function setOperator(address newOperator) external onlyOwner {
        if (newOperator == address(0)) revert ZeroAddress();
        emit OperatorChanged(operator, newOperator);
        operator = newOperator;
    }

    function setGuardian(address newGuardian) external onlyOwner {
        if (newGuardian == address(0)) revert ZeroAddress();
        emit GuardianChanged(guardian, newGuardian);
        guardian = newGuardian;
    }

    /// @notice Start a two-step ownership transfer; `newOwner` must call `acceptOwnership`.
    ///         Passing address(0) cancels a pending transfer.
    function transferOwnership(address newOwner) external onlyOwner {
        pendingOwner = newOwner;
        emit OwnershipTransferStarted(owner, newOwner);
    }

    function acceptOwnership() external {
        if (msg.sender != pendingOwner) revert NotPendingOwner();
        emit OwnershipTransferred(owner, msg.sender);
        owner = msg.sender;
        pendingOwner = address(0);
    }

    // ------------------------------------------------------------------ internals

    /// @dev Call a token and accept either no return data or an ABI-encoded `true`.
    ///      "No data" is only accepted from an address that has code, otherwise a call
    ///      to an empty address would look like a successful transfer.
    function _callToken(address token, bytes memory data) private {
        (bool ok, bytes memory ret) = token.call(data);
        if (!ok) revert TokenTransferFailed(token);
        if (ret.length == 0) {
            if (token.code.length == 0) revert TokenTransferFailed(token);
        } else if (ret.length != 32 || !abi.decode(ret, (bool))) {
            revert TokenTransferFailed(token);
        }
    }
}
