from sbox_shim.entry import main

main()
