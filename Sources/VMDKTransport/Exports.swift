// The transports' callers name `VMDKError` and the log without a second import.
@_exported import VMDKCore
