from dfer_cli.cli.app import main

main()
