// One import: `import VMDKBlock` names everything the block layer's API uses — the error type
// and the log (VMDKCore), the parsed on-disk structures (VMDKFormat) and the locations and
// transport options (VMDKTransport).
@_exported import VMDKCore
@_exported import VMDKFormat
@_exported import VMDKTransport
