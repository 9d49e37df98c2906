from sbox_shim.cli import main_entry

main_entry()
