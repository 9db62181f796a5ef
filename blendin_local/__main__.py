from blendin_local.interfaces.cli import main

main()
