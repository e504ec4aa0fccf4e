// swift-tools-version:6.0
// The VMDK toolkit: a disk-format layer (VMDKFormat), transports (VMDKTransport),
// the block layer everybody uses (VMDKBlock) and command-line tools under Tools/.
import PackageDescription

let package = Package(
  name: "vmdk-toolkit",
  products: [
    .library(name: "VMDKBlock", targets: ["VMDKBlock"]),
    .library(name: "VMDKCore", targets: ["VMDKCore"]),
    .library(name: "VMDKFormat", targets: ["VMDKFormat"]),
    .library(name: "VMDKTransport", targets: ["VMDKTransport"]),
    .library(name: "VMDKFiles", targets: ["VMDKFiles"]),
    .executable(name: "vmdk-inspect", targets: ["vmdk-inspect"]),
    .executable(name: "vmdk-convert", targets: ["vmdk-convert"]),
    .executable(name: "vmdk-disk", targets: ["vmdk-disk"]),
    .library(name: "NBDServer", targets: ["NBDServer"]),
    .executable(name: "vmdk-serve", targets: ["vmdk-serve"]),
    .executable(name: "vmdk-files", targets: ["vmdk-files"]),
    .executable(name: "vmdk-mount", targets: ["vmdk-mount"]),
    // The open VixDiskLib: VMware's C API and ABI over VMDKBlock (Tools/install.sh lays it out).
    .library(name: "vixDiskLib", type: .dynamic, targets: ["VixDiskLib"]),
  ],
  dependencies: [
    .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
    .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
  ],
  targets: [
    .systemLibrary(
      name: "CZlib", path: "Sources/CZlib", pkgConfig: "zlib",
      providers: [.apt(["zlib1g-dev"])]),
    .systemLibrary(
      name: "CCrypto", path: "Sources/CCrypto", pkgConfig: "libcrypto",
      providers: [.apt(["libssl-dev"])]),
    // OpenSSL's libssl: TLS for nbds:// and https://.
    .systemLibrary(
      name: "CSSL", path: "Sources/CSSL", pkgConfig: "libssl",
      providers: [.apt(["libssl-dev"])]),
    // libdeflate (Debian libdeflate-dev; no pkg-config file on every release): fast zlib-format
    // compression and decompression of grains.
    .systemLibrary(name: "CDeflate", path: "Sources/CDeflate", providers: [.apt(["libdeflate-dev"])]),
    // What every layer shares: the error type and its codes, and the log (swift-log).
    .target(name: "VMDKCore", dependencies: [.product(name: "Logging", package: "swift-log")]),
    .target(name: "VMDKFormat", dependencies: ["CZlib"]),
    // Linux calls behind _GNU_SOURCE (sync_file_range), wrapped in C.
    .target(name: "CPlatform", path: "Sources/CPlatform"),
    .target(
      name: "VMDKTransport",
      dependencies: ["VMDKCore", "CPlatform", "CSSL", .product(name: "Logging", package: "swift-log")]),
    .target(
      name: "VMDKBlock",
      dependencies: [
        "VMDKCore", "VMDKFormat", "VMDKTransport", "CCrypto", "CDeflate",
        .product(name: "Logging", package: "swift-log"),
      ],
      exclude: ["ChangeTracking/FORMAT.md"]),
    // File-level restore: partition tables, guest file systems (ext, FAT) behind one
    // `FileSystem` protocol, and extraction. Above VMDKBlock's public API only.
    .target(name: "VMDKFiles", dependencies: ["VMDKBlock"]),
    // What the tools share: opening flags, error reporting, JSON, sizes, progress.
    .target(
      name: "ToolSupport",
      dependencies: ["VMDKBlock", .product(name: "ArgumentParser", package: "swift-argument-parser")],
      path: "Tools/ToolSupport"),
    // What vmdk-files and vmdk-inspect share about files: the `partitions` command.
    .target(
      name: "FilesToolSupport",
      dependencies: ["VMDKFiles", "ToolSupport", .product(name: "ArgumentParser", package: "swift-argument-parser")],
      path: "Tools/FilesToolSupport"),
    .executableTarget(
      name: "vmdk-inspect",
      dependencies: [
        "VMDKBlock", "ToolSupport", "FilesToolSupport",
        .product(name: "ArgumentParser", package: "swift-argument-parser"),
      ],
      path: "Tools/vmdk-inspect"),
    .executableTarget(
      name: "vmdk-convert",
      dependencies: ["VMDKBlock", "ToolSupport", .product(name: "ArgumentParser", package: "swift-argument-parser")],
      path: "Tools/vmdk-convert"),
    // Fixtures/ holds the fuzz findings; the tests read them by path.
    .executableTarget(
      name: "vmdk-disk",
      dependencies: ["VMDKBlock", "ToolSupport", .product(name: "ArgumentParser", package: "swift-argument-parser")],
      path: "Tools/vmdk-disk"),
    // The NBD server: serves any Disk; above VMDKBlock's public API only.
    .target(name: "NBDServer", dependencies: ["VMDKBlock", "CSSL", .product(name: "Logging", package: "swift-log")]),
    .executableTarget(
      name: "vmdk-serve",
      dependencies: [
        "NBDServer", "VMDKBlock", "ToolSupport", .product(name: "ArgumentParser", package: "swift-argument-parser"),
      ],
      path: "Tools/vmdk-serve"),
    .testTarget(name: "NBDServerTests", dependencies: ["NBDServer", "VMDKBlock", "CSSL"]),
    // File-level restore: partitions, ls, stat, cat, find and extract over VMDKFiles.
    .executableTarget(
      name: "vmdk-files",
      dependencies: [
        "VMDKFiles", "ToolSupport", "FilesToolSupport",
        .product(name: "ArgumentParser", package: "swift-argument-parser"),
      ],
      path: "Tools/vmdk-files"),
    // vmdk-mount: libfuse3 (Debian libfuse3-dev) behind a small C shim; the logic in VMDKMount.
    .target(name: "CFuse", path: "Sources/CFuse", linkerSettings: [.linkedLibrary("fuse3")]),
    .target(name: "VMDKMount", dependencies: ["VMDKFiles", "CFuse"]),
    .executableTarget(
      name: "vmdk-mount",
      dependencies: ["VMDKMount", "ToolSupport", .product(name: "ArgumentParser", package: "swift-argument-parser")],
      path: "Tools/vmdk-mount"),
    // Benchmarks/run-io.sh's load generator (random reads and writes through the library).
    .executableTarget(name: "vmdk-bench", dependencies: ["VMDKBlock", "VMDKTransport"], path: "Benchmarks/vmdk-bench"),
    // VixDiskLib's C headers (vixDiskLib.h, vixDiskLibExt.h) and the C glue for va_list log callbacks.
    .target(name: "CVixDiskLib", path: "Sources/CVixDiskLib"),
    // The C symbols (`@_cdecl`) of libvixDiskLib.so.
    .target(
      name: "VixDiskLib", dependencies: ["VMDKBlock", "CVixDiskLib", .product(name: "Logging", package: "swift-log")]),
    .testTarget(name: "VMDKFormatTests", dependencies: ["VMDKFormat"], exclude: ["Fixtures"]),
    // TransportFixtures/ holds the transport fuzz target's findings; the tests read them by path.
    .testTarget(
      name: "VMDKBlockTests",
      dependencies: ["VMDKBlock", "VMDKTransport", .product(name: "Logging", package: "swift-log")],
      exclude: ["TransportFixtures"]),
    // The README's library examples and an application's own LoggingSystem: VMDKBlock alone.
    .testTarget(
      name: "LibraryUseTests",
      dependencies: ["VMDKBlock", .product(name: "Logging", package: "swift-log")]),
    .testTarget(
      name: "InteropTests",
      dependencies: [
        "VMDKBlock", "VMDKFiles", "vmdk-inspect", "vmdk-convert", "vmdk-disk", "vmdk-serve", "vmdk-files", "vmdk-mount",
      ]),
    // Pure tests of the partition and file-system parsers, hostile inputs included.
    .testTarget(name: "VMDKFilesTests", dependencies: ["VMDKFiles"]),
    // vmdk-mount's tree without FUSE: names made safe, path resolution, errors as errno.
    .testTarget(name: "VMDKMountTests", dependencies: ["VMDKMount", "VMDKFiles"]),
    // C programs in C/ compiled with cc against libvixDiskLib.so and run.
    .testTarget(name: "VixDiskLibTests", dependencies: ["VMDKBlock"], exclude: ["C"]),
  ]
)
