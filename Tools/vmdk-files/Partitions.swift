// `vmdk-files partitions`: the command FilesToolSupport shares with `vmdk-inspect partitions`.

import FilesToolSupport

typealias Partitions = PartitionsCommand
