@main enum VMDKConvert { static func main() { print("vmdk-convert: not yet") } }
