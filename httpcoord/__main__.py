from httpcoord.cli import main

main()
