// `vmdk-inspect partitions`: the command FilesToolSupport shares with `vmdk-files partitions`
// (the same output, text and JSON).

import FilesToolSupport

typealias Partitions = PartitionsCommand
