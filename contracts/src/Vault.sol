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
///         watcher credits them from the `Deposit` events. A withdrawal is paid only when
///         (1) the operator (the hot wallet) sends it, (2) validators holding at least two
///         thirds of the validator power signed its EIP-712 `Payout` authorization, and
///         (3) it fits the token's hourly USD limit. Each id pays once, so a re-sent
///         transaction can never pay twice.
/// @dev Roles: the owner administers (validator set, token limits, roles); the operator
///      withdraws; the guardian (or the owner) can pause in an emergency, and only the
///      guardian unpauses. Pausing stops deposits and withdrawals alike. A withdrawal that
///      would pass its token's hourly limit pauses the vault itself and pays nothing.
///
///      Quorum: `3 * signedPower >= 2 * totalPower`, computed exactly. A threshold
///      written as `signed >= total * 2 / 3` floors in integer division and lets exactly
///      half through (2 of 4 equal validators: 2 >= 8 / 3 = 2); this vault does not.
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
    error PayoutExpired(uint256 deadline);
    error BadSignature(uint256 index);
    error SignersNotAscending(uint256 index);
    error NotValidator(address signer);
    error QuorumNotMet(uint256 signedPower, uint256 totalPower);
    error TokenNotListed(address token);
    error BadValidatorSet();
    error BadTokenLimit();

    // ------------------------------------------------------------------ events

    event Deposit(address indexed account, address indexed token, uint256 amount);
    event Withdrawn(uint256 indexed id, address indexed to, address indexed token, uint256 amount);
    event OwnershipTransferStarted(address indexed previousOwner, address indexed newOwner);
    event OwnershipTransferred(address indexed previousOwner, address indexed newOwner);
    event OperatorChanged(address indexed previousOperator, address indexed newOperator);
    event GuardianChanged(address indexed previousGuardian, address indexed newGuardian);
    event Paused(address indexed by);
    event Unpaused(address indexed by);
    /// @notice A withdrawal that would pass its token's hourly limit: nothing was paid and
    ///         the vault paused itself. `usedThisHour` is the USD value (18 decimals)
    ///         already paid in this token this hour, without this withdrawal.
    event WithdrawPaused(uint256 indexed id, address indexed token, uint256 amount, uint256 usedThisHour);
    event ValidatorSetChanged(address[] signers, uint256[] powers, uint256 totalPower);
    event TokenLimitChanged(address indexed token, uint8 decimals, uint256 priceUsd, uint256 hourlyLimitUsd);

    // ------------------------------------------------------------------ state

    address public owner;
    address public pendingOwner;
    address public operator;
    address public guardian;
    bool public paused;

    /// @notice Withdrawal ids already paid. An id is the watcher's on-chain withdrawal id.
    mapping(uint256 => bool) public withdrawn;

    /// @notice Validator power by signer address (0 = not a validator), and their sum.
    mapping(address => uint256) public validatorPower;
    uint256 public totalPower;
    address[] private _validators;

    /// @notice Per token (address(0) = native): its decimals, its fixed USD price per
    ///         whole token and its hourly limit, both in USD with 18 decimals. A token
    ///         with no limit set cannot be withdrawn.
    struct TokenLimit {
        uint8 decimals;
        bool listed;
        uint256 priceUsd;
        uint256 hourlyLimitUsd;
        uint256 hour; // block.timestamp / 3600 of the usage below
        uint256 usedUsd; // USD (18 decimals) paid in that hour
    }

    mapping(address => TokenLimit) public tokenLimits;
    address[] private _listedTokens;

    bytes32 public constant PAYOUT_TYPEHASH =
        keccak256("Payout(uint256 id,address token,address to,uint256 amount,uint256 deadline)");
    bytes32 private constant _DOMAIN_TYPEHASH =
        keccak256("EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)");
    // secp256k1n / 2: a signature with a higher s is the malleable twin of a valid one.
    uint256 private constant _HALF_N = 0x7FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF5D576E7357A4501DDFE92F46681B20A0;

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

    /// @notice Pay `amount` of `token` (address(0) = native) to `to` under withdrawal `id`,
    ///         authorized by `signatures`: 65-byte `r | s | v` EIP-712 signatures over
    ///         `payoutDigest`, sorted by signer address ascending (so no signer
    ///         twice), from validators holding at least two thirds of the power.
    ///         Each id pays at most once. If the payout would pass the token's hourly
    ///         limit the vault pauses, emits `WithdrawPaused` and pays nothing (the
    ///         transaction succeeds, so the pause stays).
    function withdraw(
        uint256 id,
        address token,
        address to,
        uint256 amount,
        uint256 deadline,
        bytes[] calldata signatures
    ) external onlyOperator whenNotPaused nonReentrant {
        if (withdrawn[id]) revert AlreadyWithdrawn(id);
        if (to == address(0)) revert ZeroAddress();
        if (amount == 0) revert ZeroAmount();
        if (block.timestamp > deadline) revert PayoutExpired(deadline);
        _checkQuorum(payoutDigest(id, token, to, amount, deadline), signatures);

        TokenLimit storage limit = tokenLimits[token];
        if (!limit.listed) revert TokenNotListed(token);
        uint256 hour = block.timestamp / 3600;
        if (limit.hour != hour) {
            limit.hour = hour;
            limit.usedUsd = 0;
        }
        uint256 value = usdValue(token, amount);
        if (limit.usedUsd + value > limit.hourlyLimitUsd) {
            paused = true;
            emit WithdrawPaused(id, token, amount, limit.usedUsd);
            emit Paused(address(this));
            return;
        }
        limit.usedUsd += value;

        withdrawn[id] = true;
        if (token == address(0)) {
            (bool ok,) = to.call{value: amount}("");
            if (!ok) revert NativeTransferFailed(to);
        } else {
            _callToken(token, abi.encodeWithSelector(0xa9059cbb, to, amount));
        }
        emit Withdrawn(id, to, token, amount);
    }

    /// @notice The EIP-712 digest validators sign for one payout: domain {name
    ///         "WatcherVault", version "2", this chain, this vault}, struct
    ///         `Payout(uint256 id,address token,address to,uint256 amount,uint256 deadline)`.
    function payoutDigest(uint256 id, address token, address to, uint256 amount, uint256 deadline)
        public
        view
        returns (bytes32)
    {
        bytes32 structHash = keccak256(abi.encode(PAYOUT_TYPEHASH, id, token, to, amount, deadline));
        return keccak256(abi.encodePacked(hex"1901", domainSeparator(), structHash));
    }

    function domainSeparator() public view returns (bytes32) {
        return keccak256(
            abi.encode(_DOMAIN_TYPEHASH, keccak256("WatcherVault"), keccak256("2"), block.chainid, address(this))
        );
    }

    /// @notice USD value (18 decimals) of `amount` base units of `token`, rounded up.
    function usdValue(address token, uint256 amount) public view returns (uint256) {
        TokenLimit storage limit = tokenLimits[token];
        uint256 scale = 10 ** uint256(limit.decimals);
        return (amount * limit.priceUsd + scale - 1) / scale;
    }

    /// @notice USD (18 decimals) paid in `token` in the current hour.
    function usedThisHour(address token) external view returns (uint256) {
        TokenLimit storage limit = tokenLimits[token];
        return limit.hour == block.timestamp / 3600 ? limit.usedUsd : 0;
    }

    /// @notice The validator set: signers and their powers, in the order they were set.
    function validators() external view returns (address[] memory signers, uint256[] memory powers) {
        signers = _validators;
        powers = new uint256[](signers.length);
        for (uint256 i = 0; i < signers.length; i++) {
            powers[i] = validatorPower[signers[i]];
        }
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

    /// @notice Only the guardian unpauses. Unpausing starts the hour's limits afresh: the
    ///         guardian has looked at what paused the vault and lets it through.
    function unpause() external {
        if (msg.sender != guardian) revert NotGuardian();
        if (!paused) revert ExpectedPause();
        paused = false;
        uint256 n = _listedTokens.length;
        for (uint256 i = 0; i < n; i++) {
            tokenLimits[_listedTokens[i]].usedUsd = 0;
        }
        emit Unpaused(msg.sender);
    }

    // ------------------------------------------------------------------ validators and limits

    /// @notice Replace the validator set. Signers distinct and non-zero, powers > 0, the
    ///         total below 2^128.
    function setValidators(address[] calldata signers, uint256[] calldata powers) external onlyOwner {
        if (signers.length == 0 || signers.length != powers.length) revert BadValidatorSet();
        uint256 n = _validators.length;
        for (uint256 i = 0; i < n; i++) {
            validatorPower[_validators[i]] = 0;
        }
        delete _validators;
        uint256 total = 0;
        for (uint256 i = 0; i < signers.length; i++) {
            address signer = signers[i];
            if (signer == address(0) || powers[i] == 0 || validatorPower[signer] != 0) {
                revert BadValidatorSet();
            }
            validatorPower[signer] = powers[i];
            _validators.push(signer);
            total += powers[i];
        }
        // Bounded so that 3 * signed and 2 * total can never overflow.
        if (total > type(uint128).max) revert BadValidatorSet();
        totalPower = total;
        emit ValidatorSetChanged(signers, powers, total);
    }

    /// @notice List `token` (address(0) = native) for withdrawals, or change its price or
    ///         limit: `priceUsd` per whole token and `hourlyLimitUsd`, both USD with 18
    ///         decimals. A limit of 0 stops every withdrawal of the token (it pauses).
    function setTokenLimit(address token, uint8 decimals, uint256 priceUsd, uint256 hourlyLimitUsd)
        external
        onlyOwner
    {
        if (decimals > 77) revert BadTokenLimit();
        TokenLimit storage limit = tokenLimits[token];
        if (!limit.listed) {
            limit.listed = true;
            _listedTokens.push(token);
        }
        limit.decimals = decimals;
        limit.priceUsd = priceUsd;
        limit.hourlyLimitUsd = hourlyLimitUsd;
        emit TokenLimitChanged(token, decimals, priceUsd, hourlyLimitUsd);
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

    /// @dev Signers recovered in ascending address order (no duplicates), each a
    ///      validator; their power must satisfy 3 * signed >= 2 * total exactly.
    function _checkQuorum(bytes32 digest, bytes[] calldata signatures) private view {
        uint256 total = totalPower;
        uint256 signed = 0;
        address last = address(0);
        for (uint256 i = 0; i < signatures.length; i++) {
            address signer = _recover(digest, signatures[i], i);
            if (uint160(signer) <= uint160(last)) revert SignersNotAscending(i);
            last = signer;
            uint256 power = validatorPower[signer];
            if (power == 0) revert NotValidator(signer);
            signed += power;
        }
        if (total == 0 || 3 * signed < 2 * total) revert QuorumNotMet(signed, total);
    }

    function _recover(bytes32 digest, bytes calldata sig, uint256 index) private pure returns (address) {
        if (sig.length != 65) revert BadSignature(index);
        bytes32 r = bytes32(sig[0:32]);
        bytes32 s = bytes32(sig[32:64]);
        uint8 v = uint8(sig[64]);
        if (uint256(s) > _HALF_N || (v != 27 && v != 28)) revert BadSignature(index);
        address signer = ecrecover(digest, v, r, s);
        if (signer == address(0)) revert BadSignature(index);
        return signer;
    }

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
