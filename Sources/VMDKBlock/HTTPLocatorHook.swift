// The locator for http:// and https:// locations (VMDKTransport's HTTP transport).

import VMDKTransport

/// The StoreLocator `Disk.open` uses for an http(s) URL.
func makeHTTPLocator(options: OpenOptions) throws -> any StoreLocator {
  HTTPLocator(options: options.transport)
}
